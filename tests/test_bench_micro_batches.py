"""bench/micro_batches.py: one iteration's micro-batch splits and output joins timed with verl's functions and with
ours; a run writes both stages' times for both, leaves verl's modules as it found them, and refuses sizes verl
cannot cut by name."""
import argparse
import json
import pathlib
import subprocess
import sys

from verl.utils import tensordict_utils as tu
from verl.workers.engine import utils as engine_utils

from test_bench_row_select import rows

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "bench" / "micro_batches.py")
sys.path.insert(0, str(ROOT / "bench"))
import micro_batches as bench  # noqa: E402


def test_a_run_writes_both_stages_for_both(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, BENCH, "--rows", str(rows(tmp_path / "r.pq")), "--batch", "32",
                           "--log-prob-micro-batch", "8", "--mini-batch", "16", "--update-micro-batch", "4",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["seconds"]) == {"verl", "ours"}
    for stage in ("log_prob_pass", "update"):
        assert result["verl_over_ours"][stage] == result["seconds"]["verl"][stage] / result["seconds"]["ours"][stage]


def test_stage_seconds_restores_verls_modules():
    before = tu.chunk_tensordict, engine_utils.postprocess_batch_func
    batch = bench.step_batch([3, 4, 5, 6], [1, 2, 3, 4])
    args = argparse.Namespace(log_prob_micro_batch=2, mini_batch=2, update_micro_batch=1)
    for ours in (False, True):
        assert set(bench.stage_seconds(batch, args, ours)) == {"log_prob_pass", "update"}
        assert (tu.chunk_tensordict, engine_utils.postprocess_batch_func) == before


def test_sizes_verl_cannot_cut_are_refused_by_name(tmp_path):
    done = subprocess.run([sys.executable, BENCH, "--rows", str(rows(tmp_path / "r.pq")), "--batch", "30"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "--batch 30 is not a multiple of --log-prob-micro-batch 128" in done.stderr
