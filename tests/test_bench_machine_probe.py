"""bench/machine_probe.py's CPU-side parts, and its refusal to run without a GPU (the GPU parts run on the node)."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import machine_probe  # noqa: E402


def test_python_loop_rate_is_a_rate():
    assert 0 < machine_probe.python_loop_mops(n=200_000, repeats=1) < 10_000


def test_nvidia_smi_without_a_gpu_reads_as_nothing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert machine_probe.nvidia_smi() == {}


def test_cpu_model_is_named():
    assert machine_probe.cpu_model()


def test_without_cuda_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "machine_probe.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120,
                          env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "machine_probe: no CUDA device (it probes a GPU machine)"
    assert not out.exists()


def test_summary_names_each_figure_and_what_nvidia_smi_did_not_say():
    result = {"gpu": {"name": "NVIDIA H200", "clocks.sm": "1980 MHz", "clocks.max.sm": "1980 MHz"},
              "gemm_bf16_tflops": 701.4, "copy_rate_bytes_per_s": 4.259e12,
              "cpu": {"model": "Xeon", "cores": 16, "load_average_1m": 0.25, "python_loop_mops": 41.6}}
    assert machine_probe.summary(result) == (
        "machine probe: NVIDIA H200, bf16 GEMM 701 TFLOP/s, copy 4.26 TB/s, SM clock 1980 MHz of 1980 MHz, "
        "power cap ?, in use ?; CPU Xeon, 16 cores, load 0.2, Python loop 42 M/s")
