"""Success per split and task type, read from the validation metrics verl logs, as JSON.

    python -m molmo_agent.integrations.verl.eval_report LOG --model M --temperature T \
        --val-files valid_seen.parquet valid_unseen.parquet [--command C] [--out FILE]

verl's console logger prints each logged step as `step:N - key:value - ...` (behind Ray's actor prefix). A
validation logs, per data source (the rows' `data_source`, e.g. `alfworld/valid_unseen`), the mean over its
episodes of each field of the final step's `reward_extra_info` (`agent_loop.episode_summary`):

    val-core/alfworld/valid_unseen/acc/mean@1                                   success: every game of the split, an
                                                                                episode whose environment failed
                                                                                counted as lost
    val-aux/alfworld/valid_unseen/success_rate/pick_and_place_simple/mean@1     success over that type's episodes
    val-aux/alfworld/valid_unseen/episode_length/mean@1, .../invalid_action_rate/mean@1,
    .../inadmissible_action_rate/mean@1

`validation_points` reads every validation of a log (a training run validates every `trainer.test_freq` steps);
the report is the last one: in `trainer.val_only=True` mode, the only one. The JSON:

    {"model", "temperature", "command", "step",
     "splits": {"valid_seen": {"games", "success", "success_by_task_type": {...}, "episode_length",
                               "invalid_action_rate", "inadmissible_action_rate"}, ...}}

`games` counts the rows of each data source in --val-files: the games the validation played, once each (group
size 1). A split of the files without metrics in the log, or metrics over more samples than one per game
(`mean@N`, N > 1), stop the command naming them.
"""
import argparse
import gzip
import json
import math
import re
import sys
from collections import Counter, defaultdict
from typing import Any

import pandas as pd

# A logged step behind any prefix (Ray's "(TaskRunnerV1 pid=...)"); numpy scalars print as np.float64(x).
STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$")
# val-<section>/<data source>/<field>/mean@<samples per game>; a data source may hold "/", a field
# success_rate/<task type>.
VALIDATION_KEY = re.compile(r"^val-(?:core|aux)/(?P<source>.+)/(?P<field>acc|success_rate/\w+|episode_length|"
                            r"invalid_action_rate|inadmissible_action_rate)/mean@(?P<samples>\d+)$")
TYPE_PREFIX = "success_rate/"


def read_console_log(path: str) -> str:
    """The text of a console log, gzipped (a `.gz` name) or not; bytes that are not UTF-8 replaced."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt", encoding="utf-8", errors="replace") as log:
        return log.read()


def logged_steps(log: str) -> dict[int, dict[str, float]]:
    """Step -> {key: value} of every `step:N - ...` line of `log` (values that are not numbers left out)."""
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for line in log.splitlines():
        match = STEP_LINE.search(line)
        if not match:
            continue
        for item in match.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            try:
                steps[int(match.group(1))][key.strip()] = float(NUMPY_SCALAR.sub(r"\1", value.strip()))
            except ValueError:
                continue
    return dict(steps)


def split_name(data_source: str) -> str:
    """"alfworld/valid_unseen" -> "valid_unseen"."""
    return data_source.rsplit("/", 1)[-1]


def validation_points(log: str) -> dict[int, dict[str, dict[str, Any]]]:
    """Step -> split -> {"success", "success_by_task_type", "episode_length", "invalid_action_rate",
    "inadmissible_action_rate"} for every step of `log` that logged validation metrics (a log older than the
    inadmissible-action metric lacks that one)."""
    points = {}
    for step, metrics in logged_steps(log).items():
        splits: dict[str, dict[str, Any]] = {}
        for key, value in metrics.items():
            match = VALIDATION_KEY.match(key)
            if not match:
                continue
            if int(match["samples"]) != 1:
                raise ValueError(f"step {step} logged {key}: {match['samples']} samples per game, where an "
                                 "evaluation plays each game once (actor_rollout_ref.rollout.val_kwargs.n=1)")
            split = splits.setdefault(split_name(match["source"]), {"success_by_task_type": {}})
            field = match["field"]
            if field.startswith(TYPE_PREFIX):
                split["success_by_task_type"][field[len(TYPE_PREFIX):]] = value
            else:
                split["success" if field == "acc" else field] = value
        if splits:
            points[step] = splits
    return points


def games_per_split(val_files: list[str]) -> dict[str, int]:
    """Rows of each data source in the validation parquet files, by split name."""
    counts: Counter = Counter()
    for path in val_files:
        counts.update(split_name(source) for source in pd.read_parquet(path, columns=["data_source"])["data_source"])
    return dict(counts)


def report(log: str, val_files: list[str], model: str, temperature: float, command: str) -> dict[str, Any]:
    """The evaluation's JSON: the last validation of `log`, each split with its number of games."""
    points = validation_points(log)
    if not points:
        raise ValueError("the log holds no validation metrics (val-core/<data source>/acc/...): did the run reach "
                         "its validation (trainer.val_before_train=True)?")
    step = max(points)
    games = games_per_split(val_files)
    missing = sorted(set(games) - set(points[step]))
    if missing:
        raise ValueError(f"step {step}'s validation has no metrics for {missing}, which the validation files hold")
    splits = {split: {"games": games[split], **points[step][split]} for split in sorted(games)}
    for split, numbers in splits.items():
        if "success" not in numbers or not math.isfinite(numbers["success"]):
            raise ValueError(f"step {step}'s validation logged no finite success (acc) for {split}")
    return {"model": model, "temperature": temperature, "command": command, "step": step, "splits": splits}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="the run's console output")
    parser.add_argument("--model", required=True, help="the evaluated model, as the run was given it")
    parser.add_argument("--temperature", type=float, required=True, help="the validation sampling temperature")
    parser.add_argument("--val-files", nargs="+", required=True, help="the run's data.val_files")
    parser.add_argument("--command", default="", help="the command that ran the evaluation")
    parser.add_argument("--out", help="JSON file to write (default: stdout)")
    args = parser.parse_args(argv)
    log = read_console_log(args.log)
    try:
        result = report(log, args.val_files, args.model, args.temperature, args.command)
    except ValueError as error:
        raise SystemExit(f"{args.log}: {error}") from None
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
