"""What the GPU checks (check_vllm_molmo2.py) and the benches (bench/vllm_molmo2.py, e2e.py, rollout_overlap.py)
share: random checkpoints, vLLM engines set up as verl sets them up, verl's own bucketed weight sync, and
nvidia-smi sampling.

Runs on a GPU node with vllm 0.24 and verl 0.9.1 installed (tests/gpu/README.md); imports nothing of them at
module level, so `--help` works anywhere.
"""
import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

# verl's colocated worker extension (weight sync over CUDA IPC) and the ZMQ socket each worker listens on: the
# extension names it from VERL_RAY_JOB_ID, VERL_REPLICA_RANK and the worker's local rank (its tensor-parallel rank).
VERL_WORKER_EXTENSION = "verl.workers.rollout.vllm_rollout.utils.vLLMColocateWorkerExtension"
VERL_ZMQ_HANDLE = "ipc:///tmp/rl-colocate-zmq-{job}-replica-0-rank-{rank}.sock"
VERL_DEFAULT_BUCKET_BYTES = 2048 << 20  # rollout.checkpoint_engine.update_weights_bucket_megabytes in verl 0.9.1
STARTED = time.time()


class Report:
    """One printed line per check ("PASS name: detail" / "FAIL name: detail") and a JSON summary."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta, self.checks = path, meta, []

    def add(self, name: str, ok: bool, detail: str, **metrics) -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail, **metrics})
        self.write()
        return ok

    def error(self, name: str, error: BaseException) -> None:
        self.add(name, False, f"{type(error).__name__}: {str(error).strip()[-800:]}")

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        summary = {**self.meta, "passed": all(c["ok"] for c in self.checks), "checks": self.checks}
        self.path.write_text(json.dumps(summary, indent=2) + "\n")


class NvidiaSmiSampler:
    """One `nvidia-smi --query-gpu` field (utilization.gpu in %, memory.used in MiB), sampled on every GPU every
    `period_ms` while the block runs. nvidia-smi sees every process's use without a CUDA context of its own; without
    nvidia-smi there are no samples."""

    def __init__(self, field: str, period_ms: int = 100):
        self.command = ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-lms", str(period_ms)]
        self.samples: list[float] = []

    def __enter__(self) -> "NvidiaSmiSampler":
        try:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        except FileNotFoundError:
            self.process = None
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.samples = [float(line) for line in self.process.communicate()[0].split() if line.strip().isdigit()]

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def peak(self) -> float | None:
        return max(self.samples, default=None)


def device_tag() -> str:
    """Short name of this GPU for result files: "NVIDIA H100 80GB HBM3" -> "h100"."""
    return torch.cuda.get_device_name().split()[1].lower()


def log(message: str) -> None:
    """Progress line with the seconds since this process started."""
    print(f"[{time.time() - STARTED:6.1f}s] {message}", flush=True)


def make_checkpoint(root: Path, size: str) -> Path:
    """Our random `size` checkpoint under `root` (made once, reused by later runs on the same node)."""
    from molmo_agent.models.molmo2.make_checkpoint import make_checkpoint as write_checkpoint

    path = root / f"molmo2-{size}"
    if not (path / "config.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        log(f"writing {size} checkpoint to {path}")
        write_checkpoint(str(path), size, device="cuda")
    return path


def resample_weights(checkpoint: Path, out: Path, seed: int, logit_std: float = 4.0,
                     attention_gain: float = 1.0) -> Path:
    """Copy `checkpoint` to `out` with every tensor redrawn at unit gain, so that a tiny model is a sharp test.

    At width 32 the default init (std 0.02) makes the layers, the image features and the logits all but vanish:
    log-probabilities sit at -log(vocab) whatever the attention or image path does, and any two models agree.
    Redrawn: matrices N(0, 1/fan_in) (each layer moves the residual stream by O(1)), embeddings N(0, 1), the
    LM head so that logits have std `logit_std`, norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2). The decoder's
    q/k norm weights are then scaled by `attention_gain`: the attention logits by its square, so that a token
    attends to a few others rather than averaging the whole prompt (which would wash out an image's tokens).
    """
    from safetensors.torch import load_file, save_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(checkpoint, out)
    generator = torch.Generator().manual_seed(seed)
    for shard in out.glob("*.safetensors"):
        tensors = load_file(shard)
        for name, t in tensors.items():
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
            if name == "lm_head.weight":
                value = noise * logit_std / t.shape[1] ** 0.5
            elif "wte." in name or "positional_embedding" in name:
                value = noise
            elif t.ndim == 2:
                value = noise / t.shape[1] ** 0.5
            elif name.endswith("bias"):
                value = 0.1 * noise
            else:
                value = 1 + 0.1 * noise
            if name.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):
                value = value * attention_gain
            tensors[name] = value.to(t.dtype)
        save_file(tensors, shard, metadata={"format": "pt"})
    return out


def start_engine(model: Path, *, eager: bool, memory: float, max_len: int, sleep: bool = False, **kwargs):
    """A vLLM engine as verl's rollout starts one: our checkpoint, no remote code, verl's worker extension."""
    from vllm import LLM

    started = time.time()
    llm = LLM(
        model=str(model),
        trust_remote_code=False,
        dtype="bfloat16",
        enforce_eager=eager,
        gpu_memory_utilization=memory,
        max_model_len=max_len,
        enable_prefix_caching=False,
        enable_sleep_mode=sleep,
        worker_extension_cls=VERL_WORKER_EXTENSION,
        seed=0,
        **kwargs,
    )
    log(f"vLLM engine on {model.name} ready in {time.time() - started:.0f}s (eager={eager})")
    return llm


def sync_weights_like_verl(
    llm, weights: Sequence[tuple[str, torch.Tensor]], bucket_bytes: int, timeout: float = 300, ranks: int = 1
) -> float:
    """Push `weights` into the engine's model exactly as verl's colocated rollout does; return the seconds taken.

    verl's trainer side (`ServerAdapter.update_weights`) packs tensors into a CUDA buffer of `bucket_bytes`
    (a tensor larger than the buffer goes alone, by its own IPC handle) and hands each bucket over ZMQ to
    `update_weights_from_ipc` in the vLLM worker, which calls `model.load_weights` once per bucket; then the
    server clears its caches. verl sizes
    the buffer in whole MB; any byte count is set here (1 byte: every tensor alone, one per `load_weights`).
    With tensor parallelism (`ranks` > 1) every worker receives every tensor from its own sender on its own GPU,
    as each trainer rank feeds its colocated vLLM worker in verl, and its `load_weights` keeps its slice.
    The senders run in threads so that a worker that fails cannot hang this process.
    """
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender

    job = os.environ.get("VERL_RAY_JOB_ID", "0")
    # each rank's copy on its own GPU before the clock starts, as a trainer rank holds its weights
    per_rank = [[(name, tensor.to(f"cuda:{rank}")) for name, tensor in weights] for rank in range(ranks)]
    torch.cuda.synchronize()
    errors: dict[int, BaseException] = {}

    def send(rank: int) -> None:
        try:
            torch.cuda.set_device(rank)  # the sender's bucket lives on the current device
            sender = BucketedWeightSender(zmq_handle=VERL_ZMQ_HANDLE.format(job=job, rank=rank),
                                          bucket_size_mb=max(1, bucket_bytes >> 20), use_shm=False)
            sender.bucket_size = bucket_bytes
            asyncio.run(sender.async_send_weights(iter(per_rank[rank])))
        except BaseException as error:  # reported by the caller
            errors[rank] = error

    started = time.time()
    threads = [threading.Thread(target=send, args=(rank,), daemon=True) for rank in range(ranks)]
    for thread in threads:
        thread.start()
    llm.collective_rpc("update_weights_from_ipc", timeout=timeout, kwargs={"use_shm": False})
    for thread in threads:
        thread.join(timeout=30)
    if errors:
        raise errors[min(errors)]
    # verl's server then drops what the old weights computed (vLLMHttpServer.clear_kv_cache): cached prefixes,
    # processed multimodal inputs and encoder outputs. Without the encoder reset an image seen before the sync
    # keeps its old vision features (measured: parameters equal to B's, answers to the image prompt still A's).
    llm.reset_prefix_cache()
    llm.reset_mm_cache()
    llm.llm_engine.reset_encoder_cache()
    return time.time() - started


def describe_model(model) -> dict:
    """Class of the served model, its config and the process (module level: Ray workers unpickle it by name)."""
    import os

    import vllm.plugins

    return {
        "pid": os.getpid(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config_class": f"{type(model.config).__module__}.{type(model.config).__qualname__}",
        "plugins_loaded": vllm.plugins.plugins_loaded,
    }


def fingerprint_parameters(model) -> dict[str, str]:
    """vLLM parameter name -> SHA-1 of its bytes (module level: Ray workers unpickle it by name). A vocabulary
    table counts its real rows only: vLLM pads them to a multiple of 64, and the padding is never loaded."""
    import hashlib

    rows = {f"{name}.weight": m.shard_indices for name, m in model.named_modules() if hasattr(m, "shard_indices")}
    out = {}
    for name, param in model.named_parameters():
        data = param.data
        if name in rows:
            data = data[: rows[name].org_vocab_end_index - rows[name].org_vocab_start_index]
        out[name] = hashlib.sha1(data.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest()
    return out


def weight_fingerprints(llm) -> dict[str, str]:
    """`fingerprint_parameters` of the engine's model in every worker, by "rank<r>/<name>": with tensor
    parallelism each rank holds its slice (an engine started at the same size slices alike)."""
    return {f"rank{rank}/{name}": digest for rank, fingerprints in enumerate(llm.apply_model(fingerprint_parameters))
            for name, digest in fingerprints.items()}


def differing(fingerprints: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Names whose fingerprints differ, or that only one side has."""
    return sorted(n for n in fingerprints.keys() | expected.keys() if fingerprints.get(n) != expected.get(n))


def model_class_in_workers(llm) -> list[dict]:
    """`describe_model` as seen inside every vLLM worker."""
    return llm.apply_model(describe_model)
