"""How fast this machine is, in the units our runs depend on, so that timings from two machines can be compared.

    python bench/machine_probe.py [--out FILE]

The same code measured 1.3x slower in every stage on one H200 than on another (tests/gpu/results/
learn_rl_seed1_lr2e-5_h200_2026-12-01.txt), generation included; without a probe of each machine such a change
cannot be told from one of ours. A few seconds: the GPU's bf16 matrix-multiply rate (an 8192-cube GEMM, median of
--repeats; the trainer's passes are made of these), its device-to-device copy rate (vllm_molmo2.copy_rate: decode
reads weights at this rate), what nvidia-smi says of its clocks, power cap and memory already in use (another
tenant), and the CPU's single-core Python speed (the environments' steps are Python) with the load average.
Result: a JSON object in --out (default machine_probe.json), and one summary line on stdout.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_molmo2 import copy_rate, cuda_seconds  # noqa: E402

GEMM_SIZE = 8192
SMI_FIELDS = ("name", "clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "memory.used", "utilization.gpu")


def gemm_tflops(size: int = GEMM_SIZE, repeats: int = 10) -> float:
    """bf16 TFLOP/s of a size x size x size matrix multiply on the GPU: the median of `repeats` after warm-up."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    product = torch.empty_like(a)
    seconds = cuda_seconds(lambda: torch.matmul(a, b, out=product), repeats)
    return 2 * size**3 / statistics.median(seconds) / 1e12


def python_loop_mops(n: int = 5_000_000, repeats: int = 3) -> float:
    """Millions of simple Python loop iterations a second on one core (the best of `repeats`)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(n):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return n / best / 1e6


def nvidia_smi() -> dict[str, str]:
    """nvidia-smi's view of GPU 0 (SMI_FIELDS), or {} where it cannot be run."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader",
                               "--id=0"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(zip(SMI_FIELDS, (value.strip() for value in done.stdout.split(","))))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def summary(result: dict) -> str:
    """The probe in one line (nvidia-smi's fields as '?' where it could not be read)."""
    gpu, cpu = result["gpu"], result["cpu"]
    return (f"machine probe: {gpu['name']}, bf16 GEMM {result['gemm_bf16_tflops']:.0f} TFLOP/s, copy "
            f"{result['copy_rate_bytes_per_s'] / 1e12:.2f} TB/s, SM clock {gpu.get('clocks.sm', '?')} of "
            f"{gpu.get('clocks.max.sm', '?')}, power cap {gpu.get('power.limit', '?')}, in use "
            f"{gpu.get('memory.used', '?')}; CPU {cpu['model']}, {cpu['cores']} cores, load "
            f"{cpu['load_average_1m']:.1f}, Python loop {cpu['python_loop_mops']:.0f} M/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("machine_probe.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("machine_probe: no CUDA device (it probes a GPU machine)")
    result = {
        "host": platform.node(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "gpu": nvidia_smi() or {"name": torch.cuda.get_device_name()},
        "gemm_bf16_tflops": gemm_tflops(repeats=args.repeats),
        "copy_rate_bytes_per_s": copy_rate(),
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
                "python_loop_mops": python_loop_mops()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{summary(result)}; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
