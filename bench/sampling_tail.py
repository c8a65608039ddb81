"""How much a checkpoint's sampling explores at a rollout temperature and top-k, read off demonstrated states.

    python bench/sampling_tail.py --model DIR --rows SFT_DIR/valid_unseen.parquet [--vocab-rows SFT_DIR/train.parquet]
        [--temperatures 1.0 1.2 1.5 2.0] [--top-k 0 20] [--group-size 8] --out bench/results/NAME.json

Each SFT row (a demonstrated state: the agent loop's prompt ids and the demonstrator's answer) is scored teacher-
forced on the CPU, and for every temperature T and top-k k (0: none) the answer positions' sampling
distributions q = softmax(logits / T), cut to the k largest logits and renormalized when k > 0, give:
- `entropy`: the mean of H(q) over answer tokens (nats; what `actor/entropy` logs at that temperature when k = 0);
- `p_outside_top20`: the mean mass of softmax(logits / T) outside the 20 largest logits (what top-k 20 removes),
  and `p_unseen_vocab`: its mass on token ids no row of --vocab-rows holds (the vocabulary the model never saw
  used; from scratch it learned only to push those down);
- `answer_with_unseen_token`: the chance that a sampled answer holds at least one unseen-vocabulary token,
  1 - prod_i (1 - unseen_i) over its positions (teacher-forced, so an estimate);
- `answer_deviates`: 1 - prod_i q(a_i), the chance that a sample leaves the demonstrated answer somewhere, and
  `group_deviates`: 1 - prod_i q(a_i)^G, that one of a group's G samples does (the answers a GiGPO step group
  can compare in that state).
Means over rows, each split by the step's verb too ("go", "take", ...). Minutes on 2 CPU cores for the small preset.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOP_OUTSIDE = 20  # the cut `p_outside_top20` measures, whatever --top-k is


def seen_vocab(rows: pd.DataFrame, vocab_size: int) -> np.ndarray:
    """bool [vocab_size]: the token ids some row's prompt or answer holds."""
    seen = np.zeros(vocab_size, dtype=bool)
    for column in ("prompt_ids", "response_ids"):
        for ids in rows[column]:
            seen[np.asarray(ids, dtype=np.int64)] = True
    return seen


def answer_logits(model: Any, prompt: list[int], answer: list[int]) -> Any:
    """fp32 logits [len(answer), vocab] of the positions that predict each answer token, teacher-forced."""
    import torch

    ids = torch.tensor([list(prompt) + list(answer)])  # [1, P + A]
    with torch.no_grad():
        logits = model(input_ids=ids, logits_to_keep=len(answer) + 1).logits  # [1, A + 1, vocab]
    return logits[0, :-1].float()  # [A, vocab]: position P - 1 + i predicts answer token i


def row_stats(logits: Any, answer: list[int], unseen: Any, temperature: float, top_k: int,
              group_size: int) -> dict[str, float]:
    """One row's figures at one (temperature, top-k); `unseen` is a bool [vocab] tensor."""
    import torch

    scaled = logits / temperature  # [A, vocab]
    full = torch.softmax(scaled, dim=-1)  # [A, vocab]
    top_values, top_ids = scaled.topk(max(top_k, TOP_OUTSIDE), dim=-1)  # [A, max(k, 20)]
    outside_top20 = full.scatter(-1, top_ids[:, :TOP_OUTSIDE], 0.0).sum(-1)  # [A]: summed, not 1 - the head's
    unseen_mass = full[:, unseen].sum(-1)  # [A]
    if top_k:
        cut = torch.full_like(scaled, float("-inf")).scatter(-1, top_ids[:, :top_k], top_values[:, :top_k])
        sample = torch.softmax(cut, dim=-1)  # [A, vocab], zero outside the k largest
    else:
        sample = full
    log_sample = torch.log(sample.clamp_min(1e-30))
    entropy = -(sample * log_sample).sum(-1)  # [A]
    log_answer = log_sample.gather(-1, torch.tensor(answer)[:, None]).sum()  # log prod_i q(a_i)
    return {"entropy": entropy.mean().item(),
            "p_outside_top20": outside_top20.mean().item(),
            "p_unseen_vocab": unseen_mass.mean().item(),
            "answer_with_unseen_token": 1 - torch.exp(torch.log1p(-unseen_mass.clamp_max(1 - 1e-12)).sum()).item(),
            "answer_deviates": 1 - torch.exp(log_answer).item(),
            "group_deviates": 1 - torch.exp(group_size * log_answer).item()}


def verb(action: str) -> str:
    return action.split()[0] if action.strip() else "(none)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the checkpoint folder")
    parser.add_argument("--rows", required=True, type=Path, help="an SFT parquet (sft_data's rows)")
    parser.add_argument("--vocab-rows", type=Path, help="the rows whose token ids count as seen (default --rows)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.2, 1.5, 2.0])
    parser.add_argument("--top-k", type=int, nargs="+", default=[0, 20], help="0: no cut")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N rows (0: all)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if any(t <= 0 for t in args.temperatures):
        parser.error("--temperatures must be above 0")

    import torch

    from policy_failures import load_policy  # bench/ is on sys.path when this runs as a script

    rows = pd.read_parquet(args.rows)
    if args.limit:
        rows = rows.iloc[:args.limit]
    model = load_policy(args.model)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    unseen = torch.from_numpy(~seen_vocab(pd.read_parquet(args.vocab_rows or args.rows), vocab_size))
    settings = [(t, k) for t in args.temperatures for k in args.top_k]
    sums: dict[tuple[float, int], dict[str, dict[str, float]]] = {s: defaultdict(lambda: defaultdict(float))
                                                                    for s in settings}
    counts: dict[str, int] = defaultdict(int)
    start = time.perf_counter()
    for index, row in enumerate(rows.itertuples()):
        answer = [int(i) for i in row.response_ids]
        logits = answer_logits(model, [int(i) for i in row.prompt_ids], answer)
        groups = ("all", verb(row.action))
        for group in groups:
            counts[group] += 1
        for setting in settings:
            for name, value in row_stats(logits, answer, unseen, *setting, args.group_size).items():
                for group in groups:
                    sums[setting][group][name] += value
        if (index + 1) % 100 == 0:
            print(f"{index + 1}/{len(rows)} rows, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    result = {
        "model": args.model, "rows": str(args.rows), "vocab_rows": str(args.vocab_rows or args.rows),
        "n_rows": len(rows), "unseen_vocab": int(unseen.sum()), "vocab": vocab_size, "group_size": args.group_size,
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "settings": [{"temperature": t, "top_k": k,
                      "by_verb": {group: {"rows": counts[group],
                                          **{name: total / counts[group] for name, total in figures.items()}}
                                  for group, figures in sorted(sums[(t, k)].items())}}
                     for t, k in settings]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'T':>4} {'top_k':>5} {'entropy':>8} {'out20':>8} {'unseen':>8} {'ans_uns':>8} {'ans_dev':>8} "
          f"{'grp_dev':>8}")
    for setting in result["settings"]:
        figures = setting["by_verb"]["all"]
        print(f"{setting['temperature']:>4} {setting['top_k']:>5} " + " ".join(
            f"{figures[name]:>8.4f}" for name in ("entropy", "p_outside_top20", "p_unseen_vocab",
                                                  "answer_with_unseen_token", "answer_deviates", "group_deviates")))


if __name__ == "__main__":
    main()
