"""bench/row_select.py: verl's update iterator consumed once with verl's row selection and once with ours, over a
batch of step samples with the update's nested fields; a run writes both times; a batch that verl cannot cut into
whole mini-batches is refused by name."""
import json
import pathlib
import subprocess
import sys

import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import row_select as bench  # noqa: E402


def rows(path: pathlib.Path) -> pathlib.Path:
    pd.DataFrame({"prompt_ids": [[1] * n for n in range(3, 23)], "response_ids": [[2] * (n % 5 + 1)
                                                                                  for n in range(20)]}).to_parquet(path)
    return path


def test_the_batch_holds_the_updates_nested_fields_at_their_lengths():
    batch = bench.step_batch([4, 2], [3, 1])
    assert batch["input_ids"].offsets().diff().tolist() == [7, 3]
    assert batch["advantages"].offsets().diff().tolist() == [3, 1]
    assert set(bench.SEQUENCE_FIELDS + bench.ANSWER_FIELDS) <= set(batch.keys()) and len(batch) == 2


def test_a_run_writes_both_times(tmp_path):
    out = tmp_path / "result.json"
    bench_py, parquet = str(ROOT / "bench" / "row_select.py"), str(rows(tmp_path / "r.pq"))
    done = subprocess.run([sys.executable, bench_py, "--rows", parquet, "--batch", "32", "--mini-batch", "8",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["batch"] == 32 and result["nested_fields"] == 9 and set(result["seconds"]) == {"verl", "ours"}
    assert result["verl_over_ours"] == result["seconds"]["verl"] / result["seconds"]["ours"] > 0


def test_a_batch_that_does_not_split_evenly_is_refused_by_name(tmp_path):
    bench_py, parquet = str(ROOT / "bench" / "row_select.py"), str(rows(tmp_path / "r.pq"))
    done = subprocess.run([sys.executable, bench_py, "--rows", parquet, "--batch", "30", "--mini-batch", "8"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "--batch 30 is not a multiple of --mini-batch 8" in done.stderr
