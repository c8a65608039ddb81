"""The two ALFWorld demonstration sources side by side on generated games: how often alfworld's hand-coded expert
wins within the step limit, and how long its demonstrations are against the planner's walkthroughs.

    python bench/alfworld_demonstrations.py --games ROOT [--max-steps 30] [--out bench/results/alfworld_demonstrations_cpu2.json]

ROOT is a generated game tree (`python -m molmo_agent.envs.alfworld.generate --out ROOT ...`). Per split: games,
the expert's wins within --max-steps (the RL runs' env.max_steps), the mean and longest demonstration of each
source, and the expert's seconds per game. A longer expert demonstration is the search a player without the
planner's knowledge of hidden objects has to do. The expert's random draws use `expert_actions`' default seed (0),
as the SFT rows do.
"""
import argparse
import json
import platform
import statistics
import time
from collections import Counter

from molmo_agent.envs.alfworld.expert import expert_actions
from molmo_agent.envs.alfworld.games import SPLITS, load_games, read_walkthrough


def measure(games_root: str, max_steps: int) -> dict:
    result = {}
    for split in SPLITS:
        games = load_games(games_root, split)
        expert_steps, failures, start = [], Counter(), time.perf_counter()
        for game in games:
            try:
                expert_steps.append(len(expert_actions(game.path, max_steps)))
            except ValueError:
                failures[game.task_type] += 1
        seconds = time.perf_counter() - start
        walkthrough_steps = [len(read_walkthrough(game.path)) for game in games]
        result[split] = {
            "games": len(games),
            "expert_wins": len(expert_steps),
            "expert_failures_by_task_type": dict(failures),
            "expert_steps_mean": round(statistics.mean(expert_steps), 2) if expert_steps else None,
            "expert_steps_max": max(expert_steps, default=None),
            "walkthrough_steps_mean": round(statistics.mean(walkthrough_steps), 2),
            "walkthrough_steps_max": max(walkthrough_steps),
            "expert_seconds_per_game": round(seconds / len(games), 3),
        }
        print(split, json.dumps(result[split]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", required=True, help="root of a generated game tree")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--out", default="bench/results/alfworld_demonstrations_cpu2.json")
    args = parser.parse_args()
    report = {"command": f"python bench/alfworld_demonstrations.py --games <tree> --max-steps {args.max_steps}",
              "machine": {"platform": platform.platform()}, "max_steps": args.max_steps, "expert_seed": 0,
              "splits": measure(args.games, args.max_steps)}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    main()
