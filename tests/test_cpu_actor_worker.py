"""verl's own actor and reference workers on the CPU (tests/cpu_actor_worker.py) give the same log-probs,
entropies and update metrics with our replacements of verl's batch plumbing (row selection, micro-batch split and
join, response rows) as with verl's functions: the unit tests compare each function with verl's, this run checks
that they fit together where verl's worker, engine and loss call them."""
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from molmo_agent.integrations.verl import micro_batches, response_columns, row_select

TESTS = pathlib.Path(__file__).resolve().parent
PLUMBING_SWITCHES = (row_select.SWITCH, micro_batches.SWITCH, response_columns.SWITCH)


def run_worker(work: pathlib.Path, name: str, **env: str) -> dict:
    out = work / f"{name}.pt"
    done = subprocess.run([sys.executable, str(TESTS / "cpu_actor_worker.py"), str(work), str(out)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600, cwd=TESTS)
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    work = tmp_path_factory.mktemp("cpu_actor_worker")
    return work, run_worker(work, "ours")


def test_a_worker_run_scores_the_batch_and_updates(ours):
    _, result = ours
    # per sequence position, padded to the longest sequence (prompts of 20-59 tokens, answers of 2-11)
    assert result["old_log_probs"].shape == result["ref_log_prob"].shape == result["entropy"].shape
    assert result["old_log_probs"].shape[0] == 32 and 22 <= result["old_log_probs"].shape[1] <= 70
    assert torch.all(result["old_log_probs"] <= 0) and torch.isfinite(result["entropy"]).all()
    assert len(result["metrics"]["actor/pg_loss"]) == 2  # two mini-batches of 16 step samples
    assert all(math.isfinite(value) for value in result["metrics"]["actor/pg_loss"])


def test_verls_plumbing_gives_the_same_numbers(ours):
    work, result = ours
    verls = run_worker(work, "verls", **{switch: "0" for switch in PLUMBING_SWITCHES})
    for key in ("old_log_probs", "entropy", "ref_log_prob"):
        assert torch.equal(result[key], verls[key]), key
    assert result["metrics"].keys() == verls["metrics"].keys()
    for key, value in verls["metrics"].items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
