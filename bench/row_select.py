"""Host time of verl's update iterator cutting a batch of step samples into mini-batches, with verl's row selection
and with ours (molmo_agent/integrations/verl/row_select.py).

verl's actor update (`train_mini_batch`) walks `tensordict_utils.make_iterator`, which selects each mini-batch's rows
from the whole batch. This bench builds a batch of the recipe's step samples with the nested fields the update
carries (sequence lengths from an SFT parquet: the agent loop's prompts and answers), consumes the iterator once
with each function and prints the seconds and their ratio (best of --repeats). Written to
bench/results/row_select_<machine>.json.

    python bench/row_select.py --rows data/sft/train.parquet [--batch 3200 --mini-batch 128]
"""
import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from molmo_agent.integrations.verl import row_select

ROOT = Path(__file__).resolve().parents[1]
# the update's nested fields: per token of the whole sequence, and per token of the answer
SEQUENCE_FIELDS = ("input_ids", "position_ids", "attention_mask", "loss_mask")
ANSWER_FIELDS = ("responses", "response_mask", "old_log_probs", "ref_log_prob", "advantages")


def step_batch(prompt_lengths: list[int], answer_lengths: list[int]) -> TensorDict:
    """A TensorDict of step samples [B] with the update's nested fields and a per-sample id."""
    def nested(lengths: list[int], dtype: torch.dtype) -> torch.Tensor:
        return tu.nested_tensor_from_tensor_list([torch.zeros(n, dtype=dtype) for n in lengths])

    sequences = [p + a for p, a in zip(prompt_lengths, answer_lengths)]
    fields = {name: nested(sequences, torch.long) for name in SEQUENCE_FIELDS}
    fields |= {name: nested(answer_lengths, torch.float32) for name in ANSWER_FIELDS}
    return tu.get_tensordict({**fields, "uid": [str(i) for i in range(len(sequences))]})


def iterate_seconds(batch: TensorDict, mini_batch: int, select: Callable[[TensorDict, torch.Tensor], TensorDict]
                    ) -> float:
    """Seconds to consume verl's update iterator over `batch` once, with `select` as verl's row selection."""
    verls = tu.index_select_tensor_dict
    tu.index_select_tensor_dict = select
    try:
        start = time.perf_counter()
        for _ in tu.make_iterator(batch, mini_batch_size=mini_batch, epochs=1, seed=0,
                                  dataloader_kwargs={"shuffle": True}):
            pass
        return time.perf_counter() - start
    finally:
        tu.index_select_tensor_dict = verls


def write_result(result: dict, args: argparse.Namespace) -> None:
    """`result` to --out, by default bench/results/<bench>_<machine>.json."""
    out = Path(args.out or ROOT / "bench" / "results" / f"{result['bench']}_{args.machine}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", required=True, help="an SFT parquet with prompt_ids and response_ids")
    parser.add_argument("--batch", type=int, default=3200, help="step samples (an iteration's: ~3100-3400)")
    parser.add_argument("--mini-batch", type=int, default=128, help="the update's mini-batch (16 groups x 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine", default="cpu2")
    parser.add_argument("--out", help="the result file (default: bench/results/row_select_<machine>.json)")
    args = parser.parse_args()
    if args.batch % args.mini_batch:
        parser.error(f"--batch {args.batch} is not a multiple of --mini-batch {args.mini_batch} (verl asserts it)")
    rows = pd.read_parquet(args.rows, columns=["prompt_ids", "response_ids"]).sample(
        args.batch, replace=True, random_state=0)
    batch = step_batch([len(p) for p in rows.prompt_ids], [len(r) for r in rows.response_ids])
    seconds = {name: min(iterate_seconds(batch, args.mini_batch, select) for _ in range(args.repeats))
               for name, select in (("verl", row_select.VERL_INDEX_SELECT),
                                    ("ours", row_select.index_select_tensor_dict))}
    result = {"bench": "row_select", "command": "python bench/row_select.py " + " ".join(sys.argv[1:]),
              "batch": args.batch, "mini_batch": args.mini_batch,
              "nested_fields": len(SEQUENCE_FIELDS + ANSWER_FIELDS),
              "tokens": int(batch["input_ids"].offsets()[-1]), "seconds": seconds,
              "verl_over_ours": seconds["verl"] / seconds["ours"]}
    print(f"{args.batch} step samples, mini-batches of {args.mini_batch}: verl {seconds['verl']:.3f} s, "
          f"ours {seconds['ours']:.3f} s ({result['verl_over_ours']:.1f}x)")
    write_result(result, args)


if __name__ == "__main__":
    main()
