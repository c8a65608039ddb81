"""What a training group of the policy's own episodes gives the estimators to compare, per sampling setting.

    python bench/group_contrast.py TRACES... --out bench/results/NAME.json [--command "COMMAND" ...]

TRACES are `bench/policy_failures.py play --group-size G` files (each game G times: a group, as GROUP_SIZE
episodes of one game in training), one per sampling setting (their records name the temperature and top-k).
For each file:
- `success`, `steps`, `format_errors` and `inadmissible` (shares of the steps), `episode_length`;
- `mixed_groups`: the share of groups that both won and lost (an episode advantage other than 0 needs one);
- `anchor_group_share`: the share of steps whose GiGPO anchor another step of its group shares. The anchor is the
  agent loop's: the state's observation (`envs.prompts.anchor_observation`, with the task at step 0), and after
  an action that changed nothing ("Nothing happens.") the anchor of the state it was taken in;
- `contrast_share`: the share of steps in an anchor group whose steps took at least two different actions — the
  states where GiGPO's step advantage compares actions, not only later luck;
- `distinct_actions`: the mean number of different actions in anchor groups of several steps;
- `unchanged_share`: the share of steps taken after an action that changed nothing, and
  `contrast_share_raw_observation`: `contrast_share` with every observation as its own anchor, "Nothing
  happens." included (how the agent loop anchored steps before: all of a group's such steps in one anchor group).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from molmo_agent.algorithms.gigpo import anchor_group_share
from molmo_agent.envs.alfworld.session import NOTHING_HAPPENS
from molmo_agent.envs.prompts import anchor_observation

from policy_failures import read_traces  # bench/ is on sys.path when this runs as a script


def actions_by_anchor(group_ids: list[str], anchors: list[str], actions: list[str]) -> list[list[str]]:
    """The actions taken in each anchor group (one list per (group, anchor) pair)."""
    taken: dict[tuple[str, str], list[str]] = defaultdict(list)
    for group, anchor, action in zip(group_ids, anchors, actions):
        taken[(group, anchor)].append(action)
    return list(taken.values())


def contrast(taken: list[list[str]], steps: int) -> float:
    """The share of `steps` in anchor groups whose steps took two or more different actions."""
    return sum(len(each) for each in taken if len(set(each)) > 1) / steps


def group_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one file's episodes, grouped by game."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["game"]].append(record)
    group_ids, anchors, raw_anchors, actions = [], [], [], []
    for game, episodes in groups.items():
        for episode in episodes:
            observation = episode["initial_obs"]
            for t, step in enumerate(episode["steps"]):
                group_ids.append(game)
                raw_anchors.append(anchor_observation(observation, episode["task"], t))
                anchors.append(anchors[-1] if t and observation == NOTHING_HAPPENS else raw_anchors[-1])
                actions.append(step["action"])
                observation = step["obs"]
    taken = actions_by_anchor(group_ids, anchors, actions)
    shared = [each for each in taken if len(each) > 1]
    steps = [step for record in records for step in record["steps"]]
    return {
        "episodes": len(records), "groups": len(groups), "group_sizes": sorted({len(e) for e in groups.values()}),
        "temperature": records[0]["temperature"], "top_k": records[0].get("top_k", 0),
        "success": sum(r["won"] for r in records) / len(records),
        "steps": len(steps), "episode_length": len(steps) / len(records),
        "format_errors": sum(not s["format_ok"] for s in steps) / len(steps),
        "inadmissible": sum(not s["admissible"] for s in steps) / len(steps),
        "mixed_groups": sum(0 < sum(e["won"] for e in episodes) < len(episodes)
                            for episodes in groups.values()) / len(groups),
        "anchor_group_share": anchor_group_share(group_ids, anchors),
        "contrast_share": contrast(taken, len(steps)),
        "distinct_actions": sum(len(set(each)) for each in shared) / len(shared) if shared else 0.0,
        "unchanged_share": sum(a != r for a, r in zip(anchors, raw_anchors)) / len(steps),
        "contrast_share_raw_observation": contrast(actions_by_anchor(group_ids, raw_anchors, actions), len(steps)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", type=Path, help="policy_failures.py play --group-size G files")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--command", action="append", default=[], help="the commands that made the traces")
    args = parser.parse_args(argv)
    settings = []
    for path in args.traces:
        records = read_traces(path)
        if not records:
            parser.error(f"{path} holds no episode")
        settings.append({"traces": str(path), **group_figures(records)})
    result = {"bench": "group_contrast", "play_commands": args.command,
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "settings": settings}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    names = ("success", "mixed_groups", "format_errors", "inadmissible", "unchanged_share", "anchor_group_share",
             "contrast_share", "contrast_share_raw_observation", "distinct_actions", "episode_length")
    print(f"{'T':>4} {'top_k':>5} " + " ".join(f"{name[:10]:>10}" for name in names))
    for figures in settings:
        print(f"{figures['temperature']:>4} {figures['top_k']:>5} " +
              " ".join(f"{figures[name]:>10.3f}" for name in names))


if __name__ == "__main__":
    main()
