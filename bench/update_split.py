"""How much of each iteration's update stage the FSDP engine itself took, read from a training run's console log.

verl logs the update stage's wall time (`timing_s/update_actor`) and its MFU (`perf/mfu/actor`), which it computes
per mini-batch as the estimated FLOPs of the mini-batch's tokens over the seconds of `engine.train_batch` alone.
Inverting the MFU gives the engine's seconds; the rest of the stage is the worker's data plumbing (fetching the
step samples from TransferQueue, the mini-batch iterator's row selection, metrics) and the trainer's calls:

    engine_s = FLOPs(total tokens, mean sequence) / (mfu x peak)        outside_s = update_s - engine_s

FLOPs are verl's estimate with Molmo2 registered (molmo_agent.integrations.verl.flops): the model's text config,
`perf/total_num_tokens` tokens in `env/steps` sequences of equal length. verl averages the mini-batches' MFUs, so
with mini-batches of unequal speed the inversion is approximate (exact when they are alike).

    python bench/update_split.py --model CHECKPOINT_DIR LOG [LOG ...] [--peak 989e12] [--out RESULT.json]

A log may be gzipped. `--model` is any checkpoint of the run's architecture (only config.json is read).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from molmo_agent.integrations.verl.eval_report import logged_steps, read_console_log
from molmo_agent.integrations.verl.flops import estimate_molmo2_tflops
from molmo_agent.models.molmo2.configuration import Molmo2Config

H200_PEAK = 989e12  # verl's bf16 peak for H100 / H200 (verl.utils.flops_counter), FLOP/s


def update_split(log: str, config: Molmo2Config, peak: float = H200_PEAK) -> list[dict[str, float]]:
    """One row per training iteration of `log` that logged the update: {"iteration", "tokens", "update_s",
    "engine_s", "outside_s", "mfu"}."""
    rows = []
    for iteration, metrics in sorted(logged_steps(log).items()):
        if not {"timing_s/update_actor", "perf/mfu/actor", "perf/total_num_tokens", "env/steps"} <= metrics.keys():
            continue
        tokens, samples, mfu = metrics["perf/total_num_tokens"], metrics["env/steps"], metrics["perf/mfu/actor"]
        seqlens = [round(tokens / samples)] * int(samples)
        tflop = estimate_molmo2_tflops(config, int(tokens), seqlens, delta_time=1.0)  # TFLOP in one second
        engine = tflop * 1e12 / (mfu * peak)
        update = metrics["timing_s/update_actor"]
        rows.append({"iteration": iteration, "tokens": tokens, "update_s": update, "engine_s": engine,
                     "outside_s": update - engine, "mfu": mfu})
    return rows


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the iterations: update, engine and outside seconds, the outside share."""
    medians = {key: statistics.median(row[key] for row in rows) for key in ("update_s", "engine_s", "outside_s")}
    return {**medians, "outside_share": statistics.median(row["outside_s"] / row["update_s"] for row in rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="console logs of training runs (verl's step lines)")
    parser.add_argument("--model", required=True, type=Path, help="a checkpoint folder of the runs' architecture")
    parser.add_argument("--peak", type=float, default=H200_PEAK, help="the peak FLOP/s verl divided by")
    parser.add_argument("--out", type=Path, help="the result file (JSON)")
    args = parser.parse_args(argv)
    config = Molmo2Config.from_pretrained(args.model)
    result: dict[str, Any] = {"bench": "update_split", "command": "python " + " ".join(sys.argv),
                              "peak_flops": args.peak, "runs": {}}
    for path in args.logs:
        rows = update_split(read_console_log(path), config, args.peak)
        if not rows:
            sys.exit(f"{path}: no iteration logged timing_s/update_actor, perf/mfu/actor, perf/total_num_tokens "
                     "and env/steps")
        medians = summary(rows)
        result["runs"][path.name] = {"median": medians, "iterations": rows}
        print(f"{path.name}: " + "  ".join(f"it {r['iteration']}: {r['update_s']:.1f} = {r['engine_s']:.1f} engine"
                                           f" + {r['outside_s']:.1f}" for r in rows))
        print(f"  median: {json.dumps({k: round(v, 3) for k, v in medians.items()})}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
