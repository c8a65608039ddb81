"""Pad tokens of verl's padded micro-batches in arrival order and sorted by length (verl/length_sorted.py).

Without remove-padding, verl's FSDP engine cuts a batch into micro-batches of `micro` samples in the order it gets
them and pads each to its longest. This bench draws batches of the recipe's step samples (prompt + answer lengths
of an SFT parquet: the agent loop's prompts), cuts them as verl does (`tensordict_utils.chunk_tensordict`), in
arrival order and in our engine's order (`length_order`), and prints the padded tokens over the real ones (median
of --draws batches) and the attention work (sum over samples of the padded width squared) saved, for the log-prob
passes (a whole iteration's ~3300 step samples, micro-batches of 128) and the update (mini-batches of 128, micro-
batches of 64), or the shapes given. Written to bench/results/micro_batch_padding_<machine>.json.

    python bench/micro_batch_padding.py --rows data/sft/train.parquet [--shape 3328x128 --shape 128x64]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from molmo_agent.integrations.verl.length_sorted import length_order

ROOT = Path(__file__).resolve().parents[1]


def padded_work(lengths: torch.Tensor, micro: int, sort: bool) -> tuple[int, int]:
    """Padded tokens and padded attention work (sum of width squared) of verl's micro-batches of `micro` samples
    of one batch with sequence `lengths` [B], in arrival order or our engine's."""
    batch = TensorDict({"input_ids": torch.nested.nested_tensor_from_jagged(
        torch.zeros(int(lengths.sum()), dtype=torch.long), torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]))},
        batch_size=[len(lengths)])
    tu.assign_non_tensor(batch, use_remove_padding=False, use_dynamic_bsz=False)
    order = length_order(batch) if sort else None
    if order is not None:
        batch = tu.index_select_tensor_dict(batch, order)
    tokens = work = 0
    for chunk in tu.chunk_tensordict(batch, len(lengths) // micro):  # verl's split without dynamic batches
        width = int(chunk["input_ids"].offsets().diff().max())
        tokens, work = tokens + len(chunk) * width, work + len(chunk) * width ** 2
    return tokens, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", required=True, help="an SFT parquet with prompt_ids and response_ids")
    parser.add_argument("--shape", action="append", help="BATCHxMICRO (default: 3328x128 and 128x64)")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--machine", default="cpu2")
    parser.add_argument("--out", help="the result file (default: bench/results/micro_batch_padding_<machine>.json)")
    args = parser.parse_args()
    rows = pd.read_parquet(args.rows, columns=["prompt_ids", "response_ids"])
    lengths = torch.tensor([len(p) + len(r) for p, r in zip(rows.prompt_ids, rows.response_ids)])
    result = {"bench": "micro_batch_padding",
              "command": "python bench/micro_batch_padding.py " + " ".join(sys.argv[1:]),
              "rows": len(lengths), "mean_length": float(lengths.float().mean()), "shapes": {}}
    for shape in args.shape or ["3328x128", "128x64"]:
        size, micro = map(int, shape.split("x"))
        if size % micro or size > len(lengths):
            sys.exit(f"--shape {shape}: the batch must hold whole micro-batches and at most {len(lengths)} rows")
        generator = torch.Generator().manual_seed(0)
        draws = [lengths[torch.randperm(len(lengths), generator=generator)[:size]] for _ in range(args.draws)]
        real = [int(d.sum()) for d in draws]
        arrival, ordered = ([padded_work(d, micro, sort) for d in draws] for sort in (False, True))
        result["shapes"][shape] = {
            "padded_over_real_arrival": statistics.median(a[0] / r for a, r in zip(arrival, real)),
            "padded_over_real_sorted": statistics.median(s[0] / r for s, r in zip(ordered, real)),
            "attention_work_arrival_over_sorted": statistics.median(a[1] / s[1] for a, s in zip(arrival, ordered))}
        print(f"{shape}: " + "  ".join(f"{k} {v:.2f}" for k, v in result["shapes"][shape].items()), flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"micro_batch_padding_{args.machine}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
