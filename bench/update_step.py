"""One micro-batch of the actor's update at the learning recipe's shapes, stage by stage: where its time goes.

Without remove-padding, verl's FSDP engine runs each micro-batch as: the model's forward over the right-padded
(batch, sequence) ids, the entropy and the log-probabilities of every position from the (batch, sequence, vocab)
logits, the loss, the backward. This bench runs that math on one device without verl's workers, on real rows:
prompt and response ids of the recipe's SFT parquet (data/sft/<split>.parquet), fp32 parameters under bf16
autocast (FSDP's mixed precision on a GPU; fp32 on the CPU). Four variants, the first three with gradient
checkpointing (the config's default):

- `verl`: verl's entropy (`verl.utils.torch_functional.entropy_from_logits`), our chunked log-probs (verl's
  per-row loop is bench/logprobs.py's subject);
- `chunked`: our chunked entropy as well (the plugin's default);
- `response_only`: both of ours, the LM head and everything after it at the response positions alone (what the
  plugin's engine does, integrations/verl/response_logits.py; the loss only reads those positions);
- `response_only_no_checkpointing`: the same without gradient checkpointing (the backward then reuses the
  forward's activations instead of running it again: worth it when they fit, as a small model's do).

Rows are padded to the micro-batch's longest, as verl's engine pads them; `--pad-to N` pads them to N tokens
instead (e.g. max_prompt_length + max_response_length: the widest micro-batch an RL run can meet).

Per variant: the median milliseconds of each stage over --steps micro-batches (after one warm-up), synchronized
between stages, and the peak memory; the variants' response log-probs are checked equal. Then the profiler over
one micro-batch of the last variant run (`--variants` picks them; by default all, the last being the plugin's
path in the learning recipe): its wall time, the device's busy time (the kernels' summed time: far below the wall
time, the step waits on the host) and the costliest operators. Written to
bench/results/update_step_<machine>.json.

    python bench/update_step.py --model CKPT --rows data/sft/train.parquet [--batch 16] [--steps 5]
        [--pad-to 1152] [--variants NAME ...] [--device cuda --machine h200]
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ["MOLMO_AGENT_FAST_ENTROPY"] = "0"  # keep verl's entropy in place to time it; ours is imported directly

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from verl.utils import torch_functional  # noqa: E402

from molmo_agent.integrations.verl.entropy import entropy_from_logits  # noqa: E402
from molmo_agent.integrations.verl.logprobs import logprobs_from_logits  # noqa: E402
from molmo_agent.integrations.verl.response_logits import response_positions  # noqa: E402
from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENTROPY_COEFF = 0.001  # the config's actor.entropy_coeff
STAGES = ("forward", "entropy", "log_probs", "backward")
PAD_ID = 0  # masked out and never scored: its value does not matter
# name: (entropy function, response positions only, gradient checkpointing)
VARIANTS = {"verl": (torch_functional.entropy_from_logits, False, True),
            "chunked": (entropy_from_logits, False, True),
            "response_only": (entropy_from_logits, True, True),
            "response_only_no_checkpointing": (entropy_from_logits, True, False)}


def micro_batch(rows: pd.DataFrame, device: str, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ids (B, L) of prompt + response (L: the longest row, or `pad_to`), their attention mask,
    and the engine's response positions (B, L): those whose next token is a response token, where the loss
    reads log-probs."""
    sequences = [list(p) + list(r) for p, r in zip(rows.prompt_ids, rows.response_ids)]
    longest = max(map(len, sequences))
    if pad_to is not None and pad_to < longest:
        sys.exit(f"--pad-to {pad_to} is shorter than a row of {longest} tokens")
    ids = torch.full((len(sequences), pad_to or longest), PAD_ID, dtype=torch.long)
    attention = torch.zeros_like(ids, dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        attention[row, :len(sequence)] = True
    prompt_lens, response_lens = (torch.tensor([len(x) for x in column]) for column in (rows.prompt_ids,
                                                                                          rows.response_ids))
    scored = response_positions(prompt_lens, response_lens, ids.shape[1])
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "scored": scored.to(device)}


def step(model: Molmo2ForConditionalGeneration, batch: dict[str, torch.Tensor], entropy_fn: Callable,
         response_only: bool, clock: Callable[[], None]) -> tuple[dict[str, float], torch.Tensor]:
    """One micro-batch's forward, entropy, log-probs, loss and backward; seconds per stage and the response
    positions' log-probs (flat, detached)."""
    seconds, start = {}, time.perf_counter()

    def mark(stage: str) -> None:
        nonlocal start
        clock()
        now = time.perf_counter()
        seconds[stage] = now - start
        start = now

    ids, attention, scored = batch["input_ids"], batch["attention_mask"], batch["scored"]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    labels = torch.roll(ids, shifts=-1, dims=1)  # the next token at each position
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if ids.device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        if response_only:  # the model's own argument, as the engine passes it
            logits = model(ids, attention_mask=attention, position_ids=position_ids,
                           logits_positions=scored).logits  # (response tokens, vocab)
            labels = labels[scored]
        else:
            logits = model(ids, attention_mask=attention, position_ids=position_ids).logits  # (B, L, vocab)
    mark("forward")
    entropy = entropy_fn(logits)
    mark("entropy")
    if response_only:
        log_probs = logprobs_from_logits(logits, labels)
        entropy_scored, log_probs_scored = entropy, log_probs
    else:  # the engine's padded path: every real position, then the loss's mask
        real = attention.reshape(-1)
        log_probs = logprobs_from_logits(logits.reshape(-1, logits.shape[-1])[real], labels.reshape(-1)[real])
        log_probs_scored = log_probs[scored.reshape(-1)[real]]
        entropy_scored = entropy[scored]
    mark("log_probs")
    advantages = torch.linspace(-1, 1, log_probs_scored.numel(), device=ids.device)
    loss = -(advantages * log_probs_scored).mean() - ENTROPY_COEFF * entropy_scored.float().mean()
    loss.backward()
    mark("backward")
    model.zero_grad(set_to_none=True)
    return seconds, log_probs_scored.detach()


def profile_step(model: Molmo2ForConditionalGeneration, batch: dict[str, torch.Tensor], variant: str,
                 clock: Callable[[], None], count: int = 15) -> dict:
    """One micro-batch of `variant` under the profiler: {"variant", "wall_ms", "device_busy_ms", "operators",
    "top"}, the top `count` operators by self device time (by self CPU time where no device ran)."""
    entropy_fn, response_only, _ = VARIANTS[variant]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available() and batch["input_ids"].is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        step(model, batch, entropy_fn, response_only, clock)
        wall = time.perf_counter() - start
    events = profile.key_averages()
    top = sorted(events, key=lambda e: (e.self_device_time_total, e.self_cpu_time_total), reverse=True)[:count]
    return {"variant": variant, "wall_ms": 1e3 * wall,
            # the kernels' own events: an operator's self device time counts its kernels a second time
            "device_busy_ms": sum(e.self_device_time_total for e in events
                                  if e.device_type == torch.autograd.DeviceType.CUDA) / 1e3,
            "operators": sum(e.count for e in events),
            "top": [{"name": e.key, "calls": e.count, "self_device_ms": e.self_device_time_total / 1e3,
                     "self_cpu_ms": e.self_cpu_time_total / 1e3} for e in top]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Molmo2 checkpoint folder (the recipe's sft_model)")
    parser.add_argument("--rows", required=True, help="an SFT parquet with prompt_ids and response_ids")
    parser.add_argument("--batch", type=int, default=16, help="rows a micro-batch (the recipe's MICRO_BATCH)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pad-to", type=int, help="pad every row to this many tokens (e.g. the RL run's "
                        "max_prompt_length + max_response_length) instead of the micro-batch's longest")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the variants to run, in order (default: all); the last one is profiled")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--machine", default="cpu2", help="name for bench/results/update_step_<machine>.json")
    parser.add_argument("--out", help="the result file (default: bench/results/update_step_<machine>.json)")
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    clock = torch.cuda.synchronize if on_gpu else (lambda: None)

    rows = pd.read_parquet(args.rows, columns=["prompt_ids", "response_ids"])
    if len(rows) < args.batch:
        sys.exit(f"{args.rows} has {len(rows)} rows, fewer than --batch {args.batch}")
    model = Molmo2ForConditionalGeneration.from_pretrained(args.model, torch_dtype=torch.float32).to(args.device)
    model.train()
    draws = [rows.sample(args.batch, random_state=seed) for seed in range(args.steps + 1)]
    batches = [micro_batch(draw, args.device, args.pad_to) for draw in draws]

    result = {"bench": "update_step", "command": "python bench/update_step.py " + " ".join(sys.argv[1:]),
              "parameters": {**vars(args), "entropy_coeff": ENTROPY_COEFF,
                             "autocast": "bf16" if on_gpu else "none (fp32)"},
              "tokens": {"per_micro_batch_padded": [int(b["input_ids"].numel()) for b in batches[1:]],
                         "per_micro_batch_real": [int(b["attention_mask"].sum()) for b in batches[1:]],
                         "per_micro_batch_scored": [int(b["scored"].sum()) for b in batches[1:]]},
              "variants": {}}
    log_probs = {}
    for name in args.variants:
        entropy_fn, response_only, checkpointing = VARIANTS[name]
        (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        times = [step(model, batch, entropy_fn, response_only, clock) for batch in batches][1:]  # 1st: warm-up
        log_probs[name] = torch.cat([t[1] for t in times]).float()
        medians = {stage: 1e3 * statistics.median(t[0][stage] for t in times) for stage in STAGES}
        result["variants"][name] = {"gradient_checkpointing": checkpointing,
                                    "median_ms": {**medians, "total": sum(medians.values())},
                                    "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None}
        stages = result["variants"][name]["median_ms"]
        print(f"{name:>14}: " + "  ".join(f"{k} {v:8.1f} ms" for k, v in stages.items()), flush=True)
    tolerance = 2e-2 if on_gpu else 1e-4  # bf16 logits from differently shaped matmuls
    first = log_probs[args.variants[0]]
    result["log_probs_equal"] = all(torch.allclose(values, first, atol=tolerance) for values in log_probs.values())
    result["profile"] = profile_step(model, batches[1], args.variants[-1], clock)  # as the last variant ran
    profiled = result["profile"]
    print(f"profiled {profiled['variant']}: wall {profiled['wall_ms']:.1f} ms, device busy "
          f"{profiled['device_busy_ms']:.1f} ms, {profiled['operators']} operators", flush=True)
    result.update(torch=torch.__version__, python=platform.python_version(),
                  device=torch.cuda.get_device_name() if on_gpu else platform.machine())
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"update_step_{args.machine}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"log-probs equal across variants: {result['log_probs_equal']}; written {out}")
    if not result["log_probs_equal"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
