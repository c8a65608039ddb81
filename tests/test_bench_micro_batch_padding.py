"""bench/micro_batch_padding.py: verl's split of a batch into padded micro-batches, in arrival order and in our
engine's length order, counts the pad tokens and attention work each carries; a run writes every shape's ratios."""
import json
import pathlib
import subprocess
import sys

import pandas as pd
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import micro_batch_padding  # noqa: E402


def test_sorted_micro_batches_hold_neighbours():
    lengths = torch.tensor([9, 3, 12, 4, 10, 2])
    assert micro_batch_padding.padded_work(lengths, 2, sort=False) == (2 * (9 + 12 + 10), 2 * (81 + 144 + 100))
    assert micro_batch_padding.padded_work(lengths, 2, sort=True) == (2 * (3 + 9 + 12), 2 * (9 + 81 + 144))


def test_a_run_writes_each_shapes_ratios(tmp_path):
    parquet, out = tmp_path / "rows.parquet", tmp_path / "result.json"
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 60, (40,), generator=generator).tolist()
    pd.DataFrame({"prompt_ids": [[1] * n for n in lengths], "response_ids": [[2]] * 40}).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "micro_batch_padding.py"), "--rows", str(parquet),
                           "--shape", "32x8", "--shape", "16x16", "--draws", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shapes = json.loads(out.read_text())["shapes"]
    assert shapes["32x8"]["padded_over_real_sorted"] < shapes["32x8"]["padded_over_real_arrival"]
    assert shapes["32x8"]["attention_work_arrival_over_sorted"] > 1
    # one micro-batch: the order cannot change its padding
    assert shapes["16x16"]["padded_over_real_sorted"] == shapes["16x16"]["padded_over_real_arrival"]


def test_a_shape_that_does_not_split_evenly_is_refused_by_name(tmp_path):
    parquet = tmp_path / "rows.parquet"
    pd.DataFrame({"prompt_ids": [[1, 1]] * 10, "response_ids": [[2]] * 10}).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "micro_batch_padding.py"), "--rows", str(parquet),
                           "--shape", "9x2", "--out", str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0 and "--shape 9x2: the batch must hold whole micro-batches" in done.stderr
