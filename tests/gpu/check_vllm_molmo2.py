"""GPU checks of our vLLM Molmo2 (molmo_agent/integrations/vllm) against our transformers Molmo2.

    python tests/gpu/check_vllm_molmo2.py --size tiny      # every check
    python tests/gpu/check_vllm_molmo2.py --size 4b-shape --checks plugin,tokens,parity
    python tests/gpu/check_vllm_molmo2.py --size tiny --tp 2     # every engine tensor-parallel over two GPUs

Prints one line per check ("PASS name: detail" / "FAIL name: detail") and writes
$OUT/vllm_molmo2_checks_<size>[_tp<N>].json. With --tp N every engine runs on N GPUs; a sync then feeds each
rank from its own sender, as verl's trainer ranks do, and parameters compare rank by rank. Checks:
- plugin: vLLM's registry in this process, and the model and config classes inside the engine's worker
  process, are ours (our `vllm.general_plugins` entry point ran there); vLLM resolves our processor with
  trust_remote_code=False.
- tokens: the token ids vLLM builds for an image prompt (from a string, and from our token ids as verl sends
  them) equal our processor's.
- parity: log-probabilities of vLLM (bf16) and our transformers model agree: prompt log-probs (text prompts)
  and the top-20 log-probs of 8 greedy steps (text and image prompts), both against our model in fp32; the
  tolerance is 3x the error of our own model in bf16 (at least 0.05 max, 0.01 mean). Greedy: every token vLLM
  picks is the fp32 argmax, or within the tolerance of it (a near tie).
- sync: an engine on checkpoint A receives B, then A, then B, then A through verl's bucketed IPC path (one
  tensor per bucket in reverse order; 1 MB buckets, which split the two embedding tables apart, twice; one 2 GB
  bucket); after each its parameters equal byte for byte those of an engine started on the sent checkpoint, and
  it answers exactly as that engine does. Each sync starts from the other checkpoint, so a tensor that was not
  loaded shows.
- sleep: level 1 (weights offloaded to CPU) keeps the weights (parameters and answers); level 2 (weights discarded) followed by verl's
  sequence wake(weights) -> sync -> wake(kv_cache) serves the synced weights.
- bad_input: a bucket with an unknown tensor name, or a wrong shape, fails with an error naming the tensor.
- ray: with vLLM's Ray executor the worker is a Ray actor, and it too serves our class.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_harness as harness  # noqa: E402

ALL_CHECKS = ("plugin", "tokens", "parity", "sync", "sleep", "bad_input", "ray")
NEW_TOKENS, TOP_K = 8, 20
TEXT_PROMPTS = [
    "User: You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a "
    "drawer 2 and a fridge 1.\nYour task is to: put a cool apple in the fridge.\nAssistant:",
    "go to countertop 1\ntake apple 1 from countertop 1\ngo to fridge 1\ncool apple 1 with fridge 1\n",
]
IMAGE_PROMPT = "<|image|>User: What is on the table? Answer in one word.\nAssistant:"


class Prompt:
    """One probe prompt: its text, image, our processor's inputs, and the request vLLM gets in verl's way."""

    def __init__(self, name: str, text: str, image, processor):
        self.name, self.text, self.image = name, text, image
        self.inputs = processor(text=text, images=[image] if image is not None else None, return_tensors="pt")
        self.ids = self.inputs["input_ids"][0].tolist()
        self.request = {"prompt_token_ids": self.ids}
        if image is not None:
            self.request["multi_modal_data"] = {"image": image}


def probe_image(seed: int = 0):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def run_engine(llm, prompts: list[Prompt]) -> list[dict]:
    """Greedy continuation with top-k log-probs (and prompt log-probs for text prompts), per prompt."""
    from vllm import SamplingParams

    results = []
    for prompt in prompts:
        params = SamplingParams(
            max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True, logprobs=TOP_K,
            # vLLM gathers the log-prob of every prompt token, and image tokens lie outside the LM head's vocabulary
            prompt_logprobs=1 if prompt.image is None else None,
        )
        out = llm.generate([prompt.request], params, use_tqdm=False)[0]
        completion = out.outputs[0]
        results.append({
            "prompt_ids": list(out.prompt_token_ids),
            "tokens": list(completion.token_ids),
            "prompt_logprobs": None if out.prompt_logprobs is None else [
                step[token].logprob for step, token in zip(out.prompt_logprobs[1:], prompt.ids[1:])
            ],
            "step_logprobs": [{t: lp.logprob for t, lp in step.items()} for step in completion.logprobs],
        })
    return results


def same_answers(a: list[dict], b: list[dict]) -> tuple[bool, str]:
    """Equal greedy tokens and log-probs (to 1e-3) on every probe prompt."""
    worst = 0.0
    for x, y in zip(a, b):
        if x["tokens"] != y["tokens"]:
            return False, f"tokens differ: {x['tokens']} vs {y['tokens']}"
        pairs = [(p, q) for s, t in zip(x["step_logprobs"], y["step_logprobs"]) for p, q in
                 ((s[k], t[k]) for k in s.keys() & t.keys())]
        if x["prompt_logprobs"] is not None:
            pairs += list(zip(x["prompt_logprobs"], y["prompt_logprobs"]))
        worst = max([worst, *(abs(p - q) for p, q in pairs)])
    return worst <= 1e-3, f"same greedy tokens, max |logprob diff| {worst:.2e}"


@torch.inference_mode()
def teacher_forced_logprobs(model, prompt: Prompt, continuation: list[int]) -> torch.Tensor:
    """[len(ids) + len(continuation), vocab] log-probs of our transformers model along prompt + continuation."""
    inputs = {k: v.to(model.device) for k, v in prompt.inputs.items() if k != "attention_mask"}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    ids = torch.tensor([prompt.ids + continuation], device=model.device)
    logits = model(**{**inputs, "input_ids": ids}).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def compare_entries(reference: torch.Tensor, prompt: Prompt, answer: dict) -> np.ndarray:
    """The values vLLM reported (prompt log-probs, top-k per step), read from `reference` at the same entries."""
    n = len(prompt.ids)
    values = []
    if answer["prompt_logprobs"] is not None:
        values += [reference[i - 1, prompt.ids[i]].item() for i in range(1, n)]
    for step, logprobs in enumerate(answer["step_logprobs"]):
        values += [reference[n - 1 + step, token].item() for token in logprobs]
    return np.array(values)


def vllm_entries(answer: dict) -> np.ndarray:
    values = list(answer["prompt_logprobs"] or [])
    for logprobs in answer["step_logprobs"]:
        values += list(logprobs.values())
    return np.array(values)


def check_parity(report, prompts, answers, hf32, hf16) -> None:
    """Log-prob parity against fp32, with our own bf16 model's error as the yardstick; greedy near-argmax."""
    for kind in ("text", "image"):
        chosen = [(p, a) for p, a in zip(prompts, answers) if (p.image is None) == (kind == "text")]
        err_vllm, err_hf16, spread = [], [], []
        for prompt, answer in chosen:
            ref = compare_entries(teacher_forced_logprobs(hf32, prompt, answer["tokens"]), prompt, answer)
            ours16 = compare_entries(teacher_forced_logprobs(hf16, prompt, answer["tokens"]), prompt, answer)
            err_vllm.append(np.abs(vllm_entries(answer) - ref))
            err_hf16.append(np.abs(ours16 - ref))
            spread.append(ref)
        err_vllm, err_hf16, spread = map(np.concatenate, (err_vllm, err_hf16, spread))
        tol_max, tol_mean = max(3 * err_hf16.max(), 0.05), max(3 * err_hf16.mean(), 0.01)
        report.add(
            f"parity_{kind}_logprobs",
            err_vllm.max() <= tol_max and err_vllm.mean() <= tol_mean,
            f"{len(err_vllm)} log-probs vs our fp32 model: vLLM bf16 max {err_vllm.max():.4f} mean "
            f"{err_vllm.mean():.4f}; our bf16 max {err_hf16.max():.4f} mean {err_hf16.mean():.4f}; tolerance max "
            f"{tol_max:.4f} mean {tol_mean:.4f}; spread of the values (std) {spread.std():.2f}",
            vllm_max=float(err_vllm.max()), vllm_mean=float(err_vllm.mean()), hf_bf16_max=float(err_hf16.max()),
            hf_bf16_mean=float(err_hf16.mean()), tolerance_max=tol_max, tolerance_mean=tol_mean,
        )
        greedy_ok, exact, total, prefixes = True, 0, 0, []
        for prompt, answer in chosen:
            ref = teacher_forced_logprobs(hf32, prompt, answer["tokens"])
            n = len(prompt.ids)
            for step, token in enumerate(answer["tokens"]):
                row = ref[n - 1 + step]
                exact += int(row.argmax().item() == token)
                greedy_ok &= bool(row.max().item() - row[token].item() <= tol_max)
                total += 1
            prefixes.append(common_prefix(hf_greedy(hf32, prompt), answer["tokens"]))
        report.add(
            f"parity_{kind}_greedy",
            greedy_ok,
            f"{exact}/{total} vLLM greedy tokens are our fp32 argmax, the rest within {tol_max:.3f} of it (near "
            f"ties); common prefix with our fp32 generate(): {prefixes} of {NEW_TOKENS}",
        )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.inference_mode()
def hf_greedy(model, prompt: Prompt) -> list[int]:
    inputs = {k: v.to(model.device) for k, v in prompt.inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, len(prompt.ids):].tolist()


def check_plugin(report, llm, model_dir: Path, name: str = "plugin") -> None:
    from vllm import ModelRegistry
    from vllm.transformers_utils.processor import get_processor

    ours = "molmo_agent.integrations.vllm.model.Molmo2ForConditionalGeneration"
    config = llm.llm_engine.model_config
    cls, _ = ModelRegistry.resolve_model_cls(config.architectures, model_config=config)
    processor = get_processor(str(model_dir), trust_remote_code=False)
    workers = harness.model_class_in_workers(llm)
    ok = (
        f"{cls.__module__}.{cls.__qualname__}" == ours
        and all(w["model_class"] == ours and w["config_class"].startswith("molmo_agent.") for w in workers)
        and type(config.hf_config).__module__.startswith("molmo_agent.")
        and type(processor).__module__.startswith("molmo_agent.")
        and all(w["pid"] != os.getpid() for w in workers)
    )
    report.add(name, ok, f"driver pid {os.getpid()} resolves {cls.__qualname__} from {cls.__module__}, config "
               f"{type(config.hf_config).__module__}, processor {type(processor).__module__}; workers: {workers}",
               workers=workers)


def check_tokens(report, llm, prompt: Prompt, text_prompt: Prompt) -> None:
    """The ids vLLM serves for an image prompt equal our processor's: from a string (vLLM tokenizes, then adds the
    BOS and expands the image) and from our token ids (verl's way: expanded blocks collapse, then expand again)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0)
    text_ids = list(llm.generate([text_prompt.text], params, use_tqdm=False)[0].prompt_token_ids)
    # Not a check: a text-only string bypasses the multimodal processor, and the tokenizer (like the released
    # one, add_bos_token=false) adds no BOS. verl sends token ids.
    print(f"INFO text-only string prompt: vLLM {len(text_ids)} tokens, our processor {len(text_prompt.ids)}; "
          f"equal to ours without the BOS: {text_ids == text_prompt.ids[1:]}", flush=True)
    requests = {
        "image_prompt_from_text": (prompt, {"prompt": prompt.text, "multi_modal_data": {"image": prompt.image}}),
        "image_prompt_from_token_ids": (prompt, prompt.request),
    }
    for name, (expected, request) in requests.items():
        ids = list(llm.generate([request], params, use_tqdm=False)[0].prompt_token_ids)
        same = ids == expected.ids
        detail = (f"{len(ids)} tokens identical ({expected.ids.count(151938)} <im_patch>)" if same else
                  f"vLLM {len(ids)} tokens, our processor {len(expected.ids)}; first difference at "
                  f"{common_prefix(ids, expected.ids)}")
        report.add(f"tokens_{name}", same, detail)


def check_bad_input(report, llm, layout_example: tuple[str, torch.Tensor], ranks: int) -> None:
    name, tensor = layout_example
    cases = {
        "bad_input_unknown_name": ("model.transformer.blocks.0.not_a_weight", tensor),
        "bad_input_wrong_shape": (name, tensor[:, :-1].contiguous()),
    }
    for check, (bad_name, bad_tensor) in cases.items():
        try:
            harness.sync_weights_like_verl(llm, [(bad_name, bad_tensor)], bucket_bytes=1 << 20, timeout=60,
                                           ranks=ranks)
        except Exception as error:  # the worker's ValueError, relayed by vLLM
            text = str(error)
            report.add(check, f"Molmo2 weight {bad_name!r}" in text, f"error names the tensor: ...{text[-300:]}")
        else:
            report.add(check, False, f"{bad_name} {tuple(bad_tensor.shape)} was accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "4b-shape"], default="tiny")
    parser.add_argument("--checks", default=",".join(ALL_CHECKS), help=f"comma-separated subset of {ALL_CHECKS}")
    parser.add_argument("--root", type=Path, default=Path.home() / "molmo2-checkpoints", help="checkpoint folder")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="JSON summary folder")
    parser.add_argument("--memory", type=float, default=None, help="gpu_memory_utilization per engine")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size of every engine (GPUs each)")
    args = parser.parse_args()
    checks = args.checks.split(",")
    unknown = set(checks) - set(ALL_CHECKS)
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}")
    if args.size != "tiny" and {"sync", "sleep", "bad_input"} & set(checks):
        parser.error("sync, sleep and bad_input need two checkpoints: run them with --size tiny")

    from transformers import AutoProcessor

    from molmo_agent.models import molmo2

    molmo2.register()
    report = harness.Report(args.out / f"vllm_molmo2_checks_{args.size}{f'_tp{args.tp}' if args.tp > 1 else ''}.json",
                            {"size": args.size, "checks_run": checks, "device": torch.cuda.get_device_name(),
                             "tensor_parallel_size": args.tp, "command": " ".join(sys.argv)})
    memory = args.memory or (0.12 if args.size == "tiny" else 0.35)
    base = harness.make_checkpoint(args.root, args.size)
    a = harness.resample_weights(base, args.root / f"{args.size}-A", seed=1) if args.size == "tiny" else base
    processor = AutoProcessor.from_pretrained(str(a))
    prompts = [Prompt(f"text{i}", t, None, processor) for i, t in enumerate(TEXT_PROMPTS)]
    prompts.append(Prompt("image", IMAGE_PROMPT, probe_image(), processor))
    engines = []

    def engine(model_dir: Path, **kwargs):
        engines.append(harness.start_engine(model_dir, eager=True, memory=memory, max_len=4096,
                                            limit_mm_per_prompt={"image": 1, "video": 0},
                                            tensor_parallel_size=args.tp, **kwargs))
        return engines[-1]

    try:
        try:
            llm = engine(a, sleep="sleep" in checks)
            start_answers = run_engine(llm, prompts)
        except Exception as error:
            report.error("engine_start", error)
            checks = []
        if "plugin" in checks:
            guarded(report, "plugin", check_plugin, report, llm, a)
        if "tokens" in checks:
            guarded(report, "tokens", check_tokens, report, llm, prompts[-1], prompts[0])
        if "parity" in checks:
            guarded(report, "parity", parity, report, a, prompts, start_answers)
        if {"sync", "sleep", "bad_input"} & set(checks):
            guarded(report, "sync", sync_and_sleep, report, checks, llm, engine, base, a, args.root, prompts,
                    start_answers, args.tp)
        if "ray" in checks:
            guarded(report, "ray", lambda: check_plugin(report, engine(a, distributed_executor_backend="ray"), a,
                                                        name="ray_plugin"))
    finally:
        for started in engines:
            try:
                started.llm_engine.engine_core.shutdown()
            except Exception as error:  # the next stage's GPU memory report shows what is left
                harness.log(f"engine shutdown failed: {error!r}")
    failed = [c["name"] for c in report.checks if not c["ok"]]
    print(f"{'FAIL' if failed else 'PASS'} vllm_molmo2_{args.size}: {len(report.checks) - len(failed)}/"
          f"{len(report.checks)} checks passed{'; failed: ' + ', '.join(failed) if failed else ''}", flush=True)
    os._exit(1 if failed else 0)  # a sender thread left waiting by a failed bucket must not hold the exit


def guarded(report, name: str, function, *args) -> None:
    """Run one group of checks; an exception is that group's FAIL line, and the next group still runs."""
    harness.log(f"checking {name}")
    try:
        function(*args)
    except Exception as error:
        report.error(name, error)


def parity(report, model_dir: Path, prompts: list[Prompt], answers: list[dict]) -> None:
    from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration

    hf32 = Molmo2ForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32).cuda().eval()
    hf16 = Molmo2ForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.bfloat16).cuda().eval()
    check_parity(report, prompts, answers, hf32, hf16)
    del hf32, hf16
    torch.cuda.empty_cache()


def sync_and_sleep(report, checks, llm, engine, base: Path, a: Path, root: Path, prompts, start_answers,
                   ranks: int) -> None:
    from safetensors.torch import load_file

    def sync(weights: list[tuple[str, torch.Tensor]], bucket_bytes: int) -> float:
        return harness.sync_weights_like_verl(llm, weights, bucket_bytes=bucket_bytes, ranks=ranks)

    b = harness.resample_weights(base, root / "tiny-B", seed=2)

    def state(model_dir: Path) -> list[tuple[str, torch.Tensor]]:
        tensors = {}
        for shard in sorted(model_dir.glob("*.safetensors")):
            tensors.update(load_file(shard, device="cuda"))
        return [(name, t.to(torch.bfloat16)) for name, t in tensors.items()]

    state_a, state_b = state(a), state(b)
    names = [n for n, _ in state_b]
    tables = f"tables at positions {names.index('model.transformer.wte.embedding')} and " \
             f"{names.index('model.transformer.wte.new_embedding')} of {len(names)}"
    fingerprints_a = harness.weight_fingerprints(llm)

    def synced(check: str, expected_fingerprints: dict, expected_answers: list[dict], detail: str) -> None:
        """The engine's parameters equal, byte for byte, those of an engine started on the sent checkpoint; so
        do its answers."""
        differ = harness.differing(harness.weight_fingerprints(llm), expected_fingerprints)
        ok, answers = same_answers(run_engine(llm, prompts), expected_answers)
        report.add(check, ok and not differ, f"{answers}; parameters differing from the expected engine's: "
                   f"{len(differ)} of {len(expected_fingerprints)} {differ[:8]} ({detail})", differing=differ)

    if "sync" in checks:
        engine_b = engine(b)
        expected_b, fingerprints_b = run_engine(engine_b, prompts), harness.weight_fingerprints(engine_b)
        seconds = sync(list(reversed(state_b)), bucket_bytes=1)
        synced("sync_A_to_B_one_tensor_per_bucket_reversed", fingerprints_b, expected_b,
               f"{len(names)} buckets, {seconds:.2f}s")
        seconds = sync(state_a, bucket_bytes=1 << 20)
        synced("sync_B_to_A_1MB_buckets", fingerprints_a, start_answers,
               f"{tables}: the larger alone, the other with its neighbours; {seconds:.2f}s")
        seconds = sync(state_b, bucket_bytes=1 << 20)
        synced("sync_A_to_B_1MB_buckets", fingerprints_b, expected_b, f"{seconds:.2f}s")
        seconds = sync(state_a, bucket_bytes=harness.VERL_DEFAULT_BUCKET_BYTES)
        synced("sync_B_to_A_one_2GB_bucket", fingerprints_a, start_answers, f"{seconds:.2f}s")
        if "sleep" in checks:
            llm.sleep(level=1)
            llm.wake_up()
            synced("sleep_level1_keeps_weights", fingerprints_a, start_answers, "sleep(1), wake_up()")
            llm.sleep(level=2)
            llm.wake_up(tags=["weights"])
            sync(state_b, bucket_bytes=harness.VERL_DEFAULT_BUCKET_BYTES)
            llm.wake_up(tags=["kv_cache"])
            synced("sleep_level2_then_sync_serves_B", fingerprints_b, expected_b,
                   "sleep(2), wake_up(weights), sync, wake_up(kv_cache)")
    if "bad_input" in checks:
        check_bad_input(report, llm, next((n, t) for n, t in state_b if t.ndim == 2 and "wte." not in n), ranks)


if __name__ == "__main__":
    main()
