"""Where a training run's start-up goes, read from its console log: from the recipe's stage marker to its first
rollout, split at the lines that verl's trainer, Ray and our agent loop log with a timestamp.

    launch       marker (`=== rl-gigpo (HH:MM:SS) ===`) -> Ray started: imports, the config check, ray.init
    task_runner  -> verl's dataloaders built: the TaskRunner's imports, tokenizer, TransferQueue, datasets
    actor        -> actor and reference engines initialized: the worker group, the FSDP models
    rollout      -> checkpoint engine manager initialized: the vLLM servers (weights, KV cache, CUDA graphs)
    resume       -> ready to fit: a resumed run's checkpoint loaded
    agent_loop   -> the first environment pool: agent-loop workers and their environment actors, inside `fit`

Each `=== rl-... ===` marker starts a run (a lane's console may hold several). A run's own log (the recipe's
train.log) has no marker: its one run starts at its first timestamped line, once the launcher's imports are done
(~20 s in), and `launch` is shorter by those. A phase whose line is missing is left out and the next one spans
both. With `VLLM_LOGGING_LEVEL=INFO` in the launching shell the vLLM servers (0.24) log their own start-up to the
same console, and the run gets two more entries:

    vllm           the seconds those lines state, one per server: `weights_s`, `compile_s` (torch.compile with
                   the profiling run), `graph_capture_s`, `init_engine_s` (spans the three before it),
                   `mm_warmup_s` (the API server's multimodal processor warm-up)
    rollout_split  `rollout` cut at the servers' timestamped lines (the first server to log each):
      server_process  -> a server's first line: Ray's server actor started, vLLM imported
      engine_process  -> "Initializing a V1 LLM engine": the engine's config resolved, its process spawned
      worker_process  -> "Starting to load model": the GPU worker's process spawned, its imports, NCCL
      engine_init     -> "init engine ... took": weights, torch.compile, KV cache, CUDA graphs
      api_server      -> "Multi-modal warmup completed": the HTTP server and the processor warm-up
      handoff         -> verl's "checkpoint engine manager initialized"

    python bench/startup_split.py LOG [LOG ...] [--out RESULT.json]

A log may be gzipped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from molmo_agent.integrations.verl.eval_report import read_console_log

MARKER = re.compile(r"^=== (rl-\S+) \((\d\d:\d\d:\d\d)\) ===$", re.MULTILINE)
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3}"
ANY_STAMP = re.compile(STAMP)
# (phase, the line that ends it); verl's and our INFO lines read `INFO:<date> <time>,<ms>:<message>`
PHASES = (
    ("launch", re.compile(STAMP + r"\s+INFO worker\.py:\d+ -- Started a local Ray instance")),
    ("task_runner", re.compile("INFO:" + STAMP + r":train and validate dataloader initialized")),
    ("actor", re.compile("INFO:" + STAMP + r":actor and ref model engine initialized")),
    ("rollout", re.compile("INFO:" + STAMP + r":checkpoint engine manager initialized")),
    ("resume", re.compile("INFO:" + STAMP + r":all initialize finished, ready to fit")),
    ("agent_loop", re.compile("INFO:" + STAMP + r":alfworld environment pool:")),
)

# vLLM's own start-up lines (INFO), each giving seconds: one per server
VLLM_SECONDS = (
    ("weights_s", re.compile(r"Model loading took [\d.]+ GiB memory and ([\d.]+) seconds")),
    ("compile_s", re.compile(r"torch\.compile and initial profiling/warmup run together took ([\d.]+) s in total")),
    ("graph_capture_s", re.compile(r"Graph capturing finished in ([\d.]+) sec")),
    ("init_engine_s", re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s")),
    ("mm_warmup_s", re.compile(r"Multi-modal warmup completed in ([\d.]+)s")),
)
# vLLM's lines read `INFO MM-DD HH:MM:SS [file.py:line] message`, without the year
VLLM_STAMP = r"INFO (\d\d-\d\d \d\d:\d\d:\d\d) \[[^\]]*\] "
ROLLOUT_PHASES = (
    ("server_process", re.compile(VLLM_STAMP)),
    ("engine_process", re.compile(VLLM_STAMP + "Initializing a V1 LLM engine")),
    ("worker_process", re.compile(VLLM_STAMP + "Starting to load model")),
    ("engine_init", re.compile(VLLM_STAMP + r"init engine \(")),
    ("api_server", re.compile(VLLM_STAMP + "Multi-modal warmup completed")),
)


def _time(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")


def startup_split(log: str) -> list[dict[str, Any]]:
    """One entry per run of `log`: {"run", "started", "start" ("marker" or "first line"), "phases": {phase:
    seconds}, "total_s"}, and "vllm" where the servers logged their start-up."""
    markers = list(MARKER.finditer(log))
    if not markers:
        first = ANY_STAMP.search(log)
        return [_split("run", _time(first.group(1)), "first line", log)] if first else []
    runs = []
    for marker, following in zip(markers, markers[1:] + [None]):
        text = log[marker.end():following.start() if following else len(log)]
        first = ANY_STAMP.search(text)  # the marker holds the time of day only: its date is the next stamp's
        if first:
            start = datetime.datetime.combine(_time(first.group(1)).date(),
                                              datetime.time.fromisoformat(marker.group(2)))
            runs.append(_split(marker.group(1), start, "marker", text))
    return [run for run in runs if run["phases"]]


def _split(run: str, start: datetime.datetime, start_kind: str, text: str) -> dict[str, Any]:
    phases, previous, found_at = {}, start, {}
    for phase, line in PHASES:
        if found := line.search(text):
            end = _time(found.group(1))
            phases[phase] = (end - previous).total_seconds()
            previous, found_at[phase] = end, found
    split = {"run": run, "started": start.isoformat(), "start": start_kind, "phases": phases,
             "total_s": (previous - start).total_seconds()}
    vllm = {key: [float(x) for x in line.findall(text)] for key, line in VLLM_SECONDS}
    if any(vllm.values()):
        split["vllm"] = {key: seconds for key, seconds in vllm.items() if seconds}
    if "actor" in found_at and "rollout" in found_at:
        actor, rollout = found_at["actor"], found_at["rollout"]
        if rollout_split := _rollout_split(text[actor.end():rollout.start()], _time(actor.group(1)),
                                           _time(rollout.group(1))):
            split["rollout_split"] = rollout_split
    return split


def _rollout_split(text: str, start: datetime.datetime, end: datetime.datetime) -> dict[str, float]:
    """`rollout` (start to end) cut at the first of each of the servers' lines in `text`; empty where the servers
    logged none. A missing line's phase is left out and the next one spans both."""
    phases, previous = {}, start
    for phase, line in ROLLOUT_PHASES:
        if found := line.search(text):
            stamp = datetime.datetime.strptime(f"{start.year}-{found.group(1)}", "%Y-%m-%d %H:%M:%S")
            phases[phase] = (stamp - previous).total_seconds()
            previous = stamp
    if phases:
        phases["handoff"] = (end - previous).total_seconds()
    return phases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="lane consoles or runs' train.log")
    parser.add_argument("--out", type=Path, help="the result file (JSON)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"bench": "startup_split", "command": "python " + " ".join(sys.argv), "runs": {}}
    for path in args.logs:
        runs = startup_split(read_console_log(path))
        if not runs:
            print(f"{path}: no timestamped start-up line of verl's trainer (left out)")
            continue
        result["runs"][str(path)] = runs
        for run in runs:
            print(f"{path} {run['run']}: " + "  ".join(f"{k} {v:.0f}" for k, v in run["phases"].items())
                  + f"  = {run['total_s']:.0f} s" + (f"  vllm {run['vllm']}" if "vllm" in run else ""))
            if "rollout_split" in run:
                print("  rollout: " + "  ".join(f"{k} {v:.0f}" for k, v in run["rollout_split"].items()))
    every = [run for runs in result["runs"].values() for run in runs]
    if not every:
        sys.exit("no log held a timestamped start-up line of verl's trainer")
    result["median_s"] = {phase: statistics.median(r["phases"][phase] for r in every if phase in r["phases"])
                          for phase, _ in PHASES if any(phase in r["phases"] for r in every)}
    result["median_s"]["total"] = statistics.median(r["total_s"] for r in every)
    print("median: " + "  ".join(f"{k} {v:.0f}" for k, v in result["median_s"].items()))
    if split_runs := [run["rollout_split"] for run in every if "rollout_split" in run]:
        result["median_rollout_s"] = {phase: statistics.median(r[phase] for r in split_runs if phase in r)
                                      for phase in [*(p for p, _ in ROLLOUT_PHASES), "handoff"]
                                      if any(phase in r for r in split_runs)}
        print("median rollout: " + "  ".join(f"{k} {v:.0f}" for k, v in result["median_rollout_s"].items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
