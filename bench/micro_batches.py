"""Host time of verl's engine cutting batches of step samples into micro-batches and joining their outputs, with
verl's functions and with ours (molmo_agent/integrations/verl/micro_batches.py).

On the padded path verl's FSDP engine splits each batch it gets with `prepare_micro_batches` (-> `chunk_tensordict`)
and joins the micro-batches' per-sample outputs with `postprocess_batch_func`. This bench does both for one
iteration's worth of the recipe's step samples (sequence lengths from an SFT parquet): a log-prob pass (the whole
batch in micro-batches of --log-prob-micro-batch, log-probs and entropies out) and an update (mini-batches of
--mini-batch in micro-batches of --update-micro-batch, log-probs out), and prints the seconds and their ratio (best
of --repeats). Written to bench/results/micro_batches_<machine>.json.

    python bench/micro_batches.py --rows data/sft/train.parquet [--batch 3200]
"""
import argparse
import sys
import time

import pandas as pd
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine import utils as engine_utils

from molmo_agent.integrations.verl import micro_batches
from row_select import step_batch, write_result

OUTPUTS = {"log_prob_pass": ("log_probs", "entropy"), "update": ("log_probs",)}


def engine_pass(batch: TensorDict, micro_batch: int, outputs: tuple[str, ...]) -> None:
    """verl's engine around the model: split `batch`, one output per sample and name of `outputs`, join."""
    tu.assign_non_tensor(batch, use_dynamic_bsz=False, micro_batch_size_per_gpu=micro_batch,
                         pad_mode=DatasetPadMode.NO_PADDING)
    parts, indices = engine_utils.prepare_micro_batches(batch)
    produced = [{"model_output": {name: part["responses"] for name in outputs}} for part in parts]
    engine_utils.postprocess_batch_func(produced, indices, batch)


def stage_seconds(batch: TensorDict, args: argparse.Namespace, ours: bool) -> dict[str, float]:
    """Seconds of each stage's splits and joins, with our functions or verl's in verl's modules."""
    chunk, postprocess = ((micro_batches.chunk_tensordict, micro_batches.postprocess_batch_func) if ours
                          else (micro_batches.VERL_CHUNK, micro_batches.VERL_POSTPROCESS))
    before = tu.chunk_tensordict, engine_utils.postprocess_batch_func
    tu.chunk_tensordict, engine_utils.postprocess_batch_func = chunk, postprocess
    try:
        start = time.perf_counter()
        engine_pass(batch, args.log_prob_micro_batch, OUTPUTS["log_prob_pass"])
        log_prob_pass = time.perf_counter() - start
        mini_batches = list(tu.make_iterator(batch, mini_batch_size=args.mini_batch, epochs=1, seed=0,
                                             dataloader_kwargs={"shuffle": True}))
        start = time.perf_counter()
        for mini_batch in mini_batches:
            engine_pass(mini_batch, args.update_micro_batch, OUTPUTS["update"])
        return {"log_prob_pass": log_prob_pass, "update": time.perf_counter() - start}
    finally:
        tu.chunk_tensordict, engine_utils.postprocess_batch_func = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", required=True, help="an SFT parquet with prompt_ids and response_ids")
    parser.add_argument("--batch", type=int, default=3200, help="step samples (an iteration's: ~3100-3400)")
    parser.add_argument("--log-prob-micro-batch", type=int, default=128)
    parser.add_argument("--mini-batch", type=int, default=128, help="the update's mini-batch (16 groups x 8)")
    parser.add_argument("--update-micro-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine", default="cpu2")
    parser.add_argument("--out", help="the result file (default: bench/results/micro_batches_<machine>.json)")
    args = parser.parse_args()
    for size, name in ((args.log_prob_micro_batch, "--log-prob-micro-batch"), (args.mini_batch, "--mini-batch")):
        if args.batch % size:
            parser.error(f"--batch {args.batch} is not a multiple of {name} {size} (verl asserts it)")
    if args.mini_batch % args.update_micro_batch:
        parser.error(f"--mini-batch {args.mini_batch} is not a multiple of --update-micro-batch")
    rows = pd.read_parquet(args.rows, columns=["prompt_ids", "response_ids"]).sample(
        args.batch, replace=True, random_state=0)
    batch = step_batch([len(p) for p in rows.prompt_ids], [len(r) for r in rows.response_ids])
    runs = {name: [stage_seconds(batch, args, ours) for _ in range(args.repeats)]
            for name, ours in (("verl", False), ("ours", True))}
    seconds = {name: {stage: min(run[stage] for run in stage_runs) for stage in OUTPUTS}
               for name, stage_runs in runs.items()}
    result = {"bench": "micro_batches", "command": "python bench/micro_batches.py " + " ".join(sys.argv[1:]),
              "batch": args.batch, "log_prob_micro_batch": args.log_prob_micro_batch, "mini_batch": args.mini_batch,
              "update_micro_batch": args.update_micro_batch, "seconds": seconds,
              "verl_over_ours": {stage: seconds["verl"][stage] / seconds["ours"][stage] for stage in OUTPUTS}}
    for stage in OUTPUTS:
        print(f"{stage}: verl {seconds['verl'][stage]:.3f} s, ours {seconds['ours'][stage]:.3f} s "
              f"({result['verl_over_ours'][stage]:.1f}x)")
    write_result(result, args)


if __name__ == "__main__":
    main()
