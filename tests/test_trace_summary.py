"""bench/trace_summary.py on a synthetic trace of known intervals: the GPU's busy time is the union of its kernels,
copies and sets over all streams (not their sum), its idle gaps over 1 ms include the stretches before the first
and after the last, each gap names the host events beside it, innermost first; self times subtract the children;
the profiler's teardown after its span is left out; a run writes the command that produced the traces."""
import gzip
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import trace_summary  # noqa: E402

NAME = "actor-rollout-ref_actor-update_step10_rank0-of-1_pid8590_20261201195629316_mb0-7.json.gz"
HOST, GPU = {"pid": 8590, "tid": 8779}, {"pid": 0, "tid": 7}


def event(category: str, name: str, start_ms: float, length_ms: float, where: dict, **args) -> dict:
    return {"ph": "X", "cat": category, "name": name, "ts": 1e6 + 1e3 * start_ms, "dur": 1e3 * length_ms, **where,
            "args": args}


def synthetic_trace(folder: pathlib.Path) -> pathlib.Path:
    """20 ms of profiler span; the GPU busy over 1.5-6.5 ms (two overlapping kernels on two streams and a copy that
    touches them), 10-12 ms and 12.5-12.8 ms; the host in a `step` annotation throughout, a `micro_batch0` one
    around the 6.5-10 ms gap and an `aten::item` in it."""
    events = [
        event("Trace", "PyTorch Profiler (0)", 0, 20, {"pid": "Spans", "tid": "PyTorch Profiler"}),
        event("kernel", "gemm", 1.5, 3, GPU),
        event("kernel", "softmax", 2, 4, {"pid": 0, "tid": 20}),
        event("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", 6, 0.5, GPU, bytes=1024),
        event("kernel", "gemm", 10, 2, GPU),
        event("gpu_memset", "Memset (Device)", 12.5, 0.3, GPU, bytes=4),
        event("gpu_user_annotation", "FullyShardedDataParallel.forward", 0, 20, GPU),
        event("user_annotation", "step", 0, 20, HOST),
        event("user_annotation", "micro_batch0", 6, 5, HOST),
        event("cpu_op", "aten::item", 7, 2.5, HOST),
        event("cpu_op", "aten::small", 6.6, 0.2, HOST),
        event("cpu_op", "aten::outer", 13, 6, HOST),
        event("cpu_op", "aten::inner", 14, 2, HOST),
        event("cuda_runtime", "cudaEventQuery", 20.5, 0.01, HOST),  # the profiler's teardown, after its span
        {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 1, "ts": 1e6, **HOST},
        {"ph": "M", "name": "thread_name", "args": {"name": "stream 7"}, **GPU},
    ]
    path = folder / NAME
    with gzip.open(path, "wt") as trace:
        json.dump({"schemaVersion": 1, "traceEvents": events}, trace)
    return path


def test_busy_time_is_the_union_and_gaps_name_the_host_events_beside_them(tmp_path):
    summary = trace_summary.summarize(synthetic_trace(tmp_path))
    assert (summary["stage"], summary["step"], summary["part"]) == ("actor-update", 10, "mb0-7")
    assert summary["wall_ms"] == 20.0
    assert summary["gpu_busy_ms"] == pytest.approx(5 + 2 + 0.3)  # the kernels, copy and set sum to 9.8
    assert summary["gpu_busy_fraction"] == pytest.approx(7.3 / 20)
    assert summary["kernels"] == 3
    assert summary["memcpy"] == {"HtoD": {"count": 1, "ms": 0.5, "bytes": 1024}}
    assert summary["top_kernels"][0] == {"name": "gemm", "calls": 2, "total_ms": 5.0}
    gaps = summary["gpu_idle_gaps"]  # the 0.5 ms between 12 and 12.5 is not over 1 ms
    assert (gaps["count"], gaps["total_ms"]) == (3, pytest.approx(1.5 + 3.5 + 7.2))
    assert [(gap["start_ms"], gap["length_ms"]) for gap in gaps["longest"]] == [(12.8, 7.2), (6.5, 3.5), (0, 1.5)]
    beside = gaps["longest"][1]["host_events"]
    assert [(host["name"], host["overlap_ms"]) for host in beside] == [
        ("micro_batch0", 3.5), ("step", 3.5), ("aten::item", 2.5)]
    assert beside[2] == {"name": "aten::item", "category": "cpu_op", "overlap_ms": 2.5, "start_ms": 7.0,
                         "duration_ms": 2.5}


def test_self_time_is_the_duration_less_the_childrens(tmp_path):
    summary = trace_summary.summarize(synthetic_trace(tmp_path))
    self_ms = {host["name"]: host["self_ms"] for host in summary["top_host_self_time"]}
    assert self_ms["aten::outer"] == 4.0 and self_ms["aten::inner"] == 2.0
    assert self_ms["micro_batch0"] == pytest.approx(5 - 2.5 - 0.2)
    assert self_ms["step"] == pytest.approx(20 - 5 - 6)


def test_a_run_writes_the_traces_command_and_prints_a_line_per_trace(tmp_path):
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "trace_summary.py"), str(synthetic_trace(tmp_path)),
                           "--out", str(out), "--command", "train.sh profile=on"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["bench"] == "trace_summary" and result["command"] == "train.sh profile=on"
    assert [trace["file"] for trace in result["traces"]] == [NAME]
    assert result["traces"][0]["start_s_after_first_trace"] == 0
    assert "actor-update mb0-7" in done.stdout
