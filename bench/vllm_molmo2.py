"""Molmo2-4B-shaped decode throughput, vLLM (with our registered Molmo2) vs our transformers model, and the time of
a full weight sync through verl's bucketed path, on one GPU.

    python bench/vllm_molmo2.py [--batch 64] [--prompt-len 256] [--new-tokens 128] [--out bench/results/...]
    python bench/vllm_molmo2.py --reduce TRACE --out bench/results/vllm_molmo2_<device>.json

Same random `4b-shape` checkpoint (made on the spot with molmo_agent.models.molmo2.make_checkpoint), same batch
of random text prompts on both sides, greedy, EOS ignored (every sequence generates --new-tokens). Throughput =
generated tokens / wall time of the whole call, prefill included; vLLM's is the median of --repeats calls after
one of the same shape (a single ~1 s call is too noisy to compare nodes). Bound: a decode step must read every
weight once, so tokens/s <= batch * (copy rate) / (bytes of all weights), with the copy rate measured here as a
1 GiB device-to-device copy (bytes read + written per second); the fraction of it vLLM reaches is reported.
Decode per step (`decode`): at batches 32, 64 and 256, a call that generates one token (prefill and the first
sample) and one that generates --new-tokens are timed (medians of --repeats); their difference over the extra
tokens is a decode step. Its bound is the bytes a step must read — the decoder's and the LM head's weights (not the
vision tower's, not the input table: a step looks up one row per sequence) and the KV cache at the steps' mean
context — over the copy rate; `fraction_of_bound` is that bound's share of the measured step. `backend` names
the attention backend vLLM picked for our Molmo2 (a multimodal prefix-LM: image blocks attend both ways).
`decode_text_only`: the same on a second engine served as the ALFWorld trainer serves it (no pictures, plain
causal attention: integrations/verl/text_only.py), where vLLM may pick another backend. Its `profile` splits a
batch-64 call's decode steps into the GPU's busy time and the gaps between (vLLM's torch profiler in the engine's
worker, PROFILE_STEPS steps after the prefill, reduced by trace_summary.py; the trace goes to $OUT), and the
kernels' time into attention (against the KV cache's share of the bound), GEMMs (against the weights') and the
rest; `--reduce TRACE` redoes that reduction on the CPU from a fetched trace. Each decode entry says whether vLLM
scheduled asynchronously (`async_scheduling`: 0.24 does by default where it can).
Weight sync: the transformers model's bf16 state dict (the trainer's, on the same GPU: colocated) pushed into
the running engine with verl 0.9.1's BucketedWeightSender / update_weights_from_ipc in 2 GB buckets (verl's
default), timed end to end, best and median of --sync-repeats; the engine's parameters are checked byte for byte
unchanged afterwards (the same weights went in), and its greedy answers to 8 prompts compared.
Results: bench/results/vllm_molmo2_<device>.json, with the command and every parameter.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gpu"))
import vllm_harness as harness  # noqa: E402

import trace_summary  # noqa: E402  (bench/, beside this file)
from molmo_agent.integrations.verl.text_only import TEXT_ONLY_ENGINE_KWARGS  # noqa: E402

GOALS = {"vllm_over_hf": 15.0, "fraction_of_bound": 0.5, "sync_seconds": 1.0, "decode_fraction_of_bound": 0.8}
DECODE_BATCHES = (32, 64, 256)
# parameters a decode step never reads whole: the vision tower, and the input tables (one row per sequence)
NOT_READ_BY_DECODE = ("vision_backbone.", "wte.")
# The profiled stretch: engine steps skipped once profiling starts (the prefill and the first decode steps), then
# the steps recorded; the profiled call generates PROFILE_MARGIN tokens more than both (vLLM stops its profiler one
# step after max_iterations).
PROFILE_SKIP_STEPS, PROFILE_STEPS, PROFILE_MARGIN = 8, 48, 8
DECODE_STEP = "execute_context_0(0)_generation_"  # vLLM's annotation of an engine step that only decodes
# A profiled kernel's class, by its name (first match; the rest are "other": norms, activations, the KV write, the
# sampler): attention reads the KV cache, the GEMMs read the weights, each against its share of the bound.
KERNEL_CLASSES = (("attention", re.compile(r"attn|attention", re.IGNORECASE)),
                  ("gemm", re.compile(r"gemm|nvjet|cublas", re.IGNORECASE)))


def cuda_seconds(op: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Seconds of each of `repeats` runs of the GPU operation `op` (CUDA events), after `warmup` untimed runs."""
    for _ in range(warmup):
        op()
    seconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        op()
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    return seconds


def copy_rate() -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (best of 20 after warm-up)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = min(cuda_seconds(lambda: dst.copy_(src), repeats=20))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * (1 << 30) / best


def random_prompts(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """[batch, length] token ids drawn from the BPE vocabulary (no special or image tokens)."""
    return torch.randint(0, 151643, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def hf_generate(model, prompts: torch.Tensor, new_tokens: int) -> float:
    """Seconds for our transformers model's greedy `generate` of `new_tokens` per prompt (after a warm-up)."""
    ids = prompts.cuda()
    mask = torch.ones_like(ids)
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    torch.cuda.synchronize()
    started = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    return seconds


def vllm_generate(llm, prompts: torch.Tensor, new_tokens: int, repeats: int = 1) -> tuple[list[float], list[list[int]]]:
    """Seconds of each of `repeats` runs in which vLLM generates `new_tokens` per prompt for the whole batch, after
    a warm-up run of the same shape (its first decode at each length may compile kernels), and the tokens."""
    from vllm import SamplingParams

    requests = [{"prompt_token_ids": row.tolist()} for row in prompts]
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(requests, params, use_tqdm=False)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        seconds.append(time.perf_counter() - started)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    assert all(len(t) == new_tokens for t in tokens)
    return seconds, tokens


def bytes_by_parameter(model: torch.nn.Module) -> dict[str, int]:
    """Each parameter's bytes, by name (what `decode_bytes_per_step` sums)."""
    return {name: p.numel() * p.element_size() for name, p in model.named_parameters()}


def decode_bytes_per_step(parameter_bytes: dict[str, int], text_config: dict, batch: int, context: float,
                          kv_bytes: int = 2) -> dict[str, float]:
    """The bytes one decode step of `batch` sequences at mean `context` tokens must read: every parameter but
    NOT_READ_BY_DECODE's (`parameter_bytes`: name -> bytes), and each sequence's keys and values in every layer
    (`kv_bytes` per element)."""
    weights = sum(n for name, n in parameter_bytes.items() if not any(part in name for part in NOT_READ_BY_DECODE))
    head_dim = text_config.get("head_dim") or text_config["hidden_size"] // text_config["num_attention_heads"]
    kv_per_token = text_config["num_hidden_layers"] * 2 * text_config["num_key_value_heads"] * head_dim * kv_bytes
    kv = kv_per_token * batch * context
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


def timed_generate(llm, prompts: torch.Tensor, new_tokens: int, repeats: int) -> float:
    """Median seconds of `repeats` calls generating `new_tokens` per prompt (after one untimed call)."""
    seconds, _ = vllm_generate(llm, prompts, new_tokens, repeats)
    return statistics.median(seconds)


def attention_backends(model) -> list[str]:
    """Names of the attention backends of the served model's layers (module level: run in vLLM's worker)."""
    return sorted({getattr(m.attn_backend, "get_name", lambda: m.attn_backend.__name__)()
                   for m in model.modules() if hasattr(m, "attn_backend")})


def decode_steps(llm, parameter_bytes: dict[str, int], text_config: dict, prompt_len: int, new_tokens: int,
                 repeats: int, rate: float) -> dict:
    """ms per decode step at each of DECODE_BATCHES against the bytes-read bound (see the module docstring)."""
    by_batch = {}
    for batch in DECODE_BATCHES:
        prompts = random_prompts(batch, prompt_len, seed=batch)
        first, full = timed_generate(llm, prompts, 1, repeats), timed_generate(llm, prompts, new_tokens, repeats)
        step_s = (full - first) / (new_tokens - 1)
        # the extra steps' contexts run from prompt_len + 1 to prompt_len + new_tokens - 1
        bound = decode_bytes_per_step(parameter_bytes, text_config, batch, prompt_len + new_tokens / 2)
        by_batch[str(batch)] = {"ms_per_step": 1e3 * step_s, "prefill_and_first_token_ms": 1e3 * first,
                                "bound_bytes_per_step": bound, "bound_ms_per_step": 1e3 * bound["total"] / rate,
                                "fraction_of_bound": bound["total"] / rate / step_s}
        harness.log(f"decode at batch {batch}: {1e3 * step_s:.2f} ms/step, "
                    f"{100 * by_batch[str(batch)]['fraction_of_bound']:.0f}% of the bytes-read bound")
    headline = by_batch["64"]
    return {"fraction_of_bound": headline["fraction_of_bound"], "ms_per_step": headline["ms_per_step"],
            "bound_bytes_per_step": headline["bound_bytes_per_step"]["total"], "copy_rate_bytes_s": rate,
            "backend": sorted({name for names in llm.apply_model(attention_backends) for name in names}),
            "async_scheduling": llm.llm_engine.vllm_config.scheduler_config.async_scheduling,
            "by_batch": by_batch}


def profiler_config(trace_dir: Path) -> dict:
    """vLLM's torch profiler for `decode_profile`: PROFILE_STEPS engine steps after PROFILE_SKIP_STEPS, the worker's
    trace only, without stacks or shapes (less host work to perturb the gaps it measures)."""
    return {"profiler": "torch", "torch_profiler_dir": str(trace_dir), "delay_iterations": PROFILE_SKIP_STEPS,
            "max_iterations": PROFILE_STEPS, "ignore_frontend": True, "torch_profiler_with_stack": False,
            "torch_profiler_dump_cuda_time_total": False}


def decode_profile(llm, prompts: torch.Tensor, trace_dir: Path) -> dict:
    """`decode_split` of one greedy call on `prompts`, profiled by an engine started with `profiler_config`."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=PROFILE_SKIP_STEPS + PROFILE_STEPS + PROFILE_MARGIN, temperature=0.0,
                            ignore_eos=True)
    llm.start_profile()
    llm.generate([{"prompt_token_ids": row.tolist()} for row in prompts], params, use_tqdm=False)
    llm.stop_profile()
    traces = sorted(trace_dir.glob("*.json.gz"), key=lambda path: path.stat().st_mtime)
    if not traces:
        raise RuntimeError(f"vLLM's profiler wrote no trace into {trace_dir}")
    return decode_split(traces[-1])


def kernel_class(name: str) -> str:
    return next((label for label, pattern in KERNEL_CLASSES if pattern.search(name)), "other")


def decode_split(trace: Path) -> dict:
    """Kernel time against gaps over the decode steps of a vLLM worker's `trace`: the steps (the worker's
    annotations of decode-only steps), and per step the profiled wall time, the GPU's busy time in it (kernels,
    copies and sets merged over streams: trace_summary.summarize), the rest (the gaps where the GPU waits for the
    host) and the kernels' time by KERNEL_CLASSES; with the top kernels and host events."""
    events = trace_summary.load_complete_events(trace)
    steps = sum(1 for event in events
                if event.get("cat") == "user_annotation" and event["name"].startswith(DECODE_STEP))
    if not steps:
        raise ValueError(f"{trace.name}: no decode-only step ({DECODE_STEP}...) was recorded")
    summary = trace_summary.summarize(trace, events)
    wall, busy = summary["wall_ms"], summary["gpu_busy_ms"]
    by_class = dict.fromkeys([label for label, _ in KERNEL_CLASSES] + ["other"], 0.0)
    for event in events:
        if event.get("cat") == "kernel":
            by_class[kernel_class(event["name"])] += trace_summary.milliseconds(event["dur"])
    return {"trace": trace.name, "steps": steps, "wall_ms_per_step": wall / steps,
            "gpu_busy_ms_per_step": busy / steps, "gap_ms_per_step": (wall - busy) / steps,
            "gpu_busy_fraction": summary["gpu_busy_fraction"],
            "kernel_ms_per_step": {label: ms / steps for label, ms in by_class.items()},
            "top_kernels": summary["top_kernels"][:5], "top_host_self_time": summary["top_host_self_time"][:5]}


def profile_bound(profile: dict, bound_bytes: dict[str, float], rate: float) -> dict:
    """`profile` (a decode_split) with the bytes its steps must read (`bound_bytes`: decode_bytes_per_step at the
    profiled context) and each kernel class's share of its bound: the GEMMs' against the weights' read time, the
    attention's against the KV cache's."""
    kernel_ms = profile["kernel_ms_per_step"]
    return {**profile, "bound_bytes_per_step": bound_bytes,
            "fraction_of_bound": {"gemm": 1e3 * bound_bytes["weights"] / rate / kernel_ms["gemm"],
                                  "attention": 1e3 * bound_bytes["kv_cache"] / rate / kernel_ms["attention"]}}


def profiled_context(prompt_len: int) -> float:
    """The mean context of the profiled steps: the prompt, the skipped steps and half the recorded ones."""
    return prompt_len + PROFILE_SKIP_STEPS + PROFILE_STEPS / 2


def reduce_into(result_path: Path, trace: Path) -> None:
    """Replace the text-only decode profile of the result at `result_path` by `decode_split` of `trace` (the run's
    own trace, fetched from $OUT), bounded by the 4b-shape preset's bytes: a result written by an older reduction
    gets the current one without a GPU."""
    from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration
    from molmo_agent.models.molmo2.make_checkpoint import build_config

    result = json.loads(result_path.read_text())
    config = build_config("4b-shape")
    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration(config).to(torch.bfloat16)
    bound = decode_bytes_per_step(bytes_by_parameter(model), config.text_config.to_dict(), 64,
                                  profiled_context(result["params"]["prompt_len"]))
    result["decode_text_only"]["profile"] = profile_bound(decode_split(trace), bound, result["copy_rate_bytes_per_s"])
    result["decode_text_only"]["profile"]["reduced_again_by"] = " ".join(
        [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result["decode_text_only"]["profile"][key]
                      for key in ("gap_ms_per_step", "kernel_ms_per_step", "fraction_of_bound")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed vLLM runs (the median counts)")
    parser.add_argument("--sync-repeats", type=int, default=3)
    parser.add_argument("--memory", type=float, default=0.5, help="vLLM gpu_memory_utilization")
    parser.add_argument("--root", type=Path, default=Path.home() / "molmo2-checkpoints", help="checkpoint folder")
    parser.add_argument("--out", type=Path, help="default: bench/results/vllm_molmo2_<device>.json")
    parser.add_argument("--reduce", type=Path, metavar="TRACE",
                        help="no GPU: reduce this run's fetched profiler trace again into --out's profile")
    args = parser.parse_args()
    if args.reduce:
        if not args.out:
            parser.error("--reduce rewrites a result: name it with --out")
        reduce_into(args.out, args.reduce)
        return

    from molmo_agent.models import molmo2

    molmo2.register()
    device = torch.cuda.get_device_name()
    out = args.out or Path(__file__).parent / "results" / f"vllm_molmo2_{harness.device_tag()}.json"
    checkpoint = harness.make_checkpoint(args.root, "4b-shape")
    prompts = random_prompts(args.batch, args.prompt_len)
    generated = args.batch * args.new_tokens

    rate = copy_rate()
    harness.log(f"device-to-device copy: {rate / 1e12:.2f} TB/s (read + write)")
    hf = molmo2.Molmo2ForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.bfloat16).cuda().eval()
    parameter_bytes = bytes_by_parameter(hf)
    weight_bytes = sum(parameter_bytes.values())
    hf_seconds = hf_generate(hf, prompts, args.new_tokens)
    harness.log(f"transformers generate: {hf_seconds:.2f}s, {generated / hf_seconds:.0f} tokens/s")
    torch.cuda.empty_cache()

    engine = {"eager": False, "memory": args.memory, "max_len": args.prompt_len + args.new_tokens + 16,
              "max_num_seqs": max(args.batch, *DECODE_BATCHES)}
    llm = harness.start_engine(checkpoint, **engine, limit_mm_per_prompt=TEXT_ONLY_ENGINE_KWARGS["limit_mm_per_prompt"])
    vllm_runs, _ = vllm_generate(llm, prompts, args.new_tokens, args.repeats)
    vllm_seconds = statistics.median(vllm_runs)
    harness.log(f"vLLM generate: {['%.3f' % s for s in vllm_runs]} s, median {generated / vllm_seconds:.0f} tokens/s")
    text_config = json.loads((checkpoint / "config.json").read_text())["text_config"]
    decode = decode_steps(llm, parameter_bytes, text_config, args.prompt_len, args.new_tokens, args.repeats, rate)

    probe = prompts[:8]  # the same batch before and after: vLLM's kernels may depend on the batch size
    _, answers_before = vllm_generate(llm, probe, 32)
    _, answers_again = vllm_generate(llm, probe, 32)  # control: is greedy decoding repeatable with no sync at all?
    fingerprints_before = harness.weight_fingerprints(llm)
    state = list(hf.state_dict().items())
    sync_seconds = [harness.sync_weights_like_verl(llm, state, harness.VERL_DEFAULT_BUCKET_BYTES)
                    for _ in range(args.sync_repeats)]
    harness.log(f"weight sync ({weight_bytes / 1e9:.2f} GB): {['%.3f' % s for s in sync_seconds]} s")
    changed = harness.differing(harness.weight_fingerprints(llm), fingerprints_before)
    _, answers_after = vllm_generate(llm, probe, 32)
    llm.llm_engine.engine_core.shutdown()
    del llm
    torch.cuda.empty_cache()

    # served text-only as the ALFWorld trainer serves it: plain causal attention opens vLLM's other backends
    trace_dir = args.root / "decode_trace"
    shutil.rmtree(trace_dir, ignore_errors=True)
    llm = harness.start_engine(checkpoint, **engine, **TEXT_ONLY_ENGINE_KWARGS,
                               profiler_config=profiler_config(trace_dir))
    decode_text_only = decode_steps(llm, parameter_bytes, text_config, args.prompt_len, args.new_tokens,
                                    args.repeats, rate)
    try:  # a diagnostic: its failure is recorded, and the measurements above are kept
        decode_text_only["profile"] = profile_bound(
            decode_profile(llm, random_prompts(64, args.prompt_len, seed=64), trace_dir),
            decode_bytes_per_step(parameter_bytes, text_config, 64, profiled_context(args.prompt_len)), rate)
        harness.log(f"decode profile at batch 64: {decode_text_only['profile']['gpu_busy_fraction']:.0%} of the "
                    f"wall GPU-busy over {decode_text_only['profile']['steps']} steps")
        if os.environ.get("OUT"):
            shutil.copy(trace_dir / decode_text_only["profile"]["trace"], os.environ["OUT"])
    except Exception as error:  # noqa: BLE001
        harness.log(f"decode profile failed: {error!r}")
        decode_text_only["profile"] = {"error": repr(error)}
    llm.llm_engine.engine_core.shutdown()

    hf_rate, vllm_rate = generated / hf_seconds, generated / vllm_seconds
    bound = args.batch * rate / weight_bytes
    result = {
        "bench": "vllm_molmo2",
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "device": device,
        "host": platform.node(),
        "params": {"checkpoint": "4b-shape (random, bf16)", "batch": args.batch, "prompt_len": args.prompt_len,
                   "new_tokens": args.new_tokens, "greedy": True, "ignore_eos": True,
                   "vllm": {"enforce_eager": False, "gpu_memory_utilization": args.memory,
                            "VLLM_USE_FLASHINFER_SAMPLER": os.environ.get("VLLM_USE_FLASHINFER_SAMPLER")},
                   "sync_bucket_bytes": harness.VERL_DEFAULT_BUCKET_BYTES},
        "weight_bytes": weight_bytes,
        "copy_rate_bytes_per_s": rate,
        "hf": {"seconds": hf_seconds, "tokens_per_s": hf_rate},
        "vllm": {"seconds": vllm_seconds, "tokens_per_s": vllm_rate, "seconds_of_each_run": vllm_runs},
        "vllm_over_hf": vllm_rate / hf_rate,
        "decode": decode,
        "decode_text_only": decode_text_only,
        "bound_tokens_per_s": bound,
        "fraction_of_bound": vllm_rate / bound,
        "sync_seconds": {"all": sync_seconds, "best": min(sync_seconds), "median": statistics.median(sync_seconds)},
        # The same weights went in: every served parameter must keep its bytes. Greedy answers are reported too;
        # at the default init the logits are near-uniform and near ties can flip.
        "sync_parameters_changed": changed,
        "greedy_repeatable_without_sync": answers_again == answers_before,
        "sync_kept_answers": answers_after == answers_before,
        "goals": GOALS,
    }
    result["goals_met"] = {
        "vllm_over_hf": result["vllm_over_hf"] >= GOALS["vllm_over_hf"],
        "fraction_of_bound": result["fraction_of_bound"] >= GOALS["fraction_of_bound"],
        "sync_seconds": result["sync_seconds"]["median"] < GOALS["sync_seconds"],
        "decode_fraction_of_bound": decode["fraction_of_bound"] >= GOALS["decode_fraction_of_bound"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(out.read_text())
    print(f"vLLM {vllm_rate:.0f} tok/s vs transformers {hf_rate:.0f} tok/s: {result['vllm_over_hf']:.1f}x "
          f"(goal {GOALS['vllm_over_hf']}x); {100 * result['fraction_of_bound']:.0f}% of the {bound:.0f} tok/s "
          f"weight-read bound (goal {100 * GOALS['fraction_of_bound']:.0f}%); weight sync median "
          f"{result['sync_seconds']['median']:.3f}s (goal < {GOALS['sync_seconds']}s); decode at batch 64 "
          f"{decode['ms_per_step']:.2f} ms/step, {100 * decode['fraction_of_bound']:.0f}% of its bytes-read bound "
          f"(goal {100 * GOALS['decode_fraction_of_bound']:.0f}%, backend {decode['backend']}), served text-only "
          f"{decode_text_only['ms_per_step']:.2f} ms/step, {100 * decode_text_only['fraction_of_bound']:.0f}% "
          f"(backend {decode_text_only['backend']}); parameters changed by "
          f"syncing the same weights: {len(changed)} {changed[:4]}; greedy answers unchanged by the sync: "
          f"{result['sync_kept_answers']}, repeatable with no sync: {result['greedy_repeatable_without_sync']}; "
          f"wrote {out}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
