"""Each validation episode's opening prompt and outcome, from verl's validation dumps.

    python -m molmo_agent.integrations.verl.validation_dump DIR --out episodes.jsonl.gz

With `trainer.validation_data_dir=DIR` verl writes `DIR/<step>.jsonl` after each validation: one line per step
sample, holding the decoded prompt (`input`), the answer (`output`), the episode's final `reward_extra_info`
fields (`acc` is success: `agent_loop.episode_summary`) and `uid` = `<uid>_<session>_<index>`, index being the
step within the episode. A game's opening prompt names it (its task and first observation), so the first step of
each episode says which game was played and `acc` how it ended: enough to pair two runs game by game, in about
1 % of the dump's bytes. Output: one JSON line per episode, `{"step", "episode", "opening_prompt", "acc"}`,
sorted by step and then by prompt (`write_episodes`; `read_episodes` reads it back).
"""
from __future__ import annotations

import argparse
import gzip
import json
import warnings
from pathlib import Path
from typing import Any


def episodes(dump_dir: Path) -> list[dict[str, Any]]:
    """The episodes of every `<step>.jsonl` in `dump_dir`; a dump whose lines lack `uid`, `input` or `acc`, or
    an episode without its first step, raises ValueError naming the file. A dump whose last line was cut off (the
    run was stopped while verl wrote it) is left out with a warning: its validation never reached the log."""
    found = []
    for step, path in sorted((int(p.stem), p) for p in dump_dir.glob("*.jsonl") if p.stem.isdigit()):
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            rows = [json.loads(line) for line in lines[:-1]]
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON lines ({error})") from None
        try:
            rows += [json.loads(line) for line in lines[-1:]]
        except json.JSONDecodeError:
            warnings.warn(f"{path}: its last line is cut off (the run stopped while writing it); left out")
            continue
        openings, outcomes = {}, {}
        for number, row in enumerate(rows, 1):
            missing = [key for key in ("uid", "input", "acc") if key not in row]
            if missing:
                raise ValueError(f"{path}:{number}: no {missing} (a validation dump of verl's trainer expected)")
            episode, _, index = row["uid"].rpartition("_")
            if not episode or not index.isdigit():
                raise ValueError(f"{path}:{number}: uid {row['uid']!r} is not <uid>_<session>_<index>")
            outcomes[episode] = row["acc"]
            if int(index) == 0:
                openings[episode] = row["input"]
        without_opening = sorted(set(outcomes) - set(openings))
        if without_opening:
            raise ValueError(f"{path}: episodes without their first step: {without_opening[:3]}")
        found += sorted(({"step": step, "episode": episode, "opening_prompt": prompt,
                          "acc": outcomes[episode]} for episode, prompt in openings.items()),
                        key=lambda e: e["opening_prompt"])
    return found


def _open(path: Path, mode: str):
    return (gzip.open if path.suffix == ".gz" else open)(path, mode, encoding="utf-8")


def write_episodes(found: list[dict[str, Any]], path: Path) -> None:
    """`episodes`' lines into `path` (gzip-compressed when its name ends in .gz)."""
    with _open(path, "wt") as out:
        out.writelines(json.dumps(episode) + "\n" for episode in found)


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """One dict per JSON line of `path` (gzip-compressed when its name ends in .gz): the episodes `write_episodes`
    wrote, or a policy's traces (`sft_data --relabel`)."""
    with _open(path, "rt") as lines:
        return [json.loads(line) for line in lines]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump_dir", type=Path, help="the run's trainer.validation_data_dir")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, gzip-compressed when it ends in .gz")
    args = parser.parse_args(argv)
    found = episodes(args.dump_dir)
    write_episodes(found, args.out)
    steps = sorted({episode["step"] for episode in found})
    print(f"{args.out}: {len(found)} episodes of {len(steps)} validations (steps {steps})")


if __name__ == "__main__":
    main()
