"""bench/update_step.py on the tiny Molmo2 and a few SFT-shaped rows: the micro-batch marks exactly the positions
whose next token is a response token, and a run writes every variant's stage times with equal log-probs."""
import json
import pathlib
import subprocess
import sys

import pandas as pd
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import update_step  # noqa: E402



def rows(count: int) -> pd.DataFrame:
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 300, (int(n),), generator=generator).tolist() for n in (7, 3, 12, 5)[:count]]
    responses = [torch.randint(5, 300, (int(n),), generator=generator).tolist() for n in (2, 4, 1, 3)[:count]]
    return pd.DataFrame({"prompt_ids": prompts, "response_ids": responses})


def test_micro_batch_scores_the_positions_that_predict_response_tokens():
    frame = rows(3)
    batch = update_step.micro_batch(frame, "cpu")
    assert batch["input_ids"].shape == (3, 13)  # right-padded to the longest prompt + response
    labels = torch.roll(batch["input_ids"], shifts=-1, dims=1)
    for row, (prompt, response) in enumerate(zip(frame.prompt_ids, frame.response_ids)):
        assert labels[row][batch["scored"][row]].tolist() == response
        assert int(batch["attention_mask"][row].sum()) == len(prompt) + len(response)


def test_pad_to_pads_every_row_as_the_rl_update_sees_it():
    frame = rows(3)
    padded, longest = update_step.micro_batch(frame, "cpu", pad_to=20), update_step.micro_batch(frame, "cpu")
    assert padded["input_ids"].shape == (3, 20)
    assert torch.equal(padded["input_ids"][:, :13], longest["input_ids"])
    assert torch.equal(padded["scored"][:, :13], longest["scored"]) and not padded["scored"][:, 13:].any()
    assert int(padded["attention_mask"].sum()) == int(longest["attention_mask"].sum())


def test_a_pad_shorter_than_a_row_is_refused_by_name(molmo2_dir, tmp_path):
    parquet = tmp_path / "rows.parquet"
    rows(3).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "update_step.py"), "--model", str(molmo2_dir),
                           "--rows", str(parquet), "--batch", "3", "--pad-to", "10", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "--pad-to 10 is shorter than a row of 13 tokens" in done.stderr


def test_a_run_times_every_stage_of_every_variant(molmo2_dir, tmp_path):
    parquet, out = tmp_path / "rows.parquet", tmp_path / "result.json"
    rows(4).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "update_step.py"), "--model", str(molmo2_dir),
                           "--rows", str(parquet), "--batch", "2", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["log_probs_equal"] is True
    assert set(result["variants"]) == {"verl", "chunked", "response_only", "response_only_no_checkpointing"}
    assert [v["gradient_checkpointing"] for v in result["variants"].values()] == [True, True, True, False]
    for variant in result["variants"].values():
        assert set(variant["median_ms"]) == {*update_step.STAGES, "total"}
        assert all(ms > 0 for ms in variant["median_ms"].values())
    # the last variant, the plugin's path in the learning recipe, under the profiler (no device here: CPU times)
    profiled = result["profile"]
    assert profiled["variant"] == "response_only_no_checkpointing" and profiled["device_busy_ms"] == 0
    assert profiled["wall_ms"] > 0 and profiled["operators"] >= len(profiled["top"]) > 0
    assert any(op["name"] == "aten::mm" and op["self_cpu_ms"] > 0 for op in profiled["top"])
    tokens = result["tokens"]
    assert len(tokens["per_micro_batch_padded"]) == 2  # the warm-up micro-batch is not counted
    assert all(s < r <= p for s, r, p in zip(tokens["per_micro_batch_scored"], tokens["per_micro_batch_real"],
                                             tokens["per_micro_batch_padded"]))


def test_chosen_variants_run_in_order_and_the_last_is_profiled(molmo2_dir, tmp_path):
    parquet, out = tmp_path / "rows.parquet", tmp_path / "result.json"
    rows(4).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "update_step.py"), "--model", str(molmo2_dir),
                           "--rows", str(parquet), "--batch", "2", "--steps", "1", "--out", str(out),
                           "--variants", "response_only_no_checkpointing", "chunked"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["response_only_no_checkpointing", "chunked"]
    assert result["profile"]["variant"] == "chunked" and result["log_probs_equal"] is True


def test_too_few_rows_are_refused_by_name(molmo2_dir, tmp_path):
    parquet = tmp_path / "rows.parquet"
    rows(2).to_parquet(parquet)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "update_step.py"), "--model", str(molmo2_dir),
                           "--rows", str(parquet), "--batch", "3", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "rows.parquet has 2 rows, fewer than --batch 3" in done.stderr
