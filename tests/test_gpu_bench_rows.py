"""`tests/gpu/run_all.sh`'s bench-e2e-rows stage: each row runs bench/e2e.py once with its speed switches and
overrides (rows 1-7 serve the checkpoint as released, row 8 is the launch defaults), BENCH_E2E_ROWS picks rows,
and a failed row stops the stage with its status. The stage's function runs alone here, `timeout` stubbed to print
the switches and the command it was given."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = ("MOLMO_AGENT_FAST_LOGPROBS", "MOLMO_AGENT_FAST_ENTROPY", "MOLMO_AGENT_REF_ON_GPU",
            "MOLMO_AGENT_RESPONSE_LOGITS", "MOLMO_AGENT_SORT_MICRO_BATCHES")
STUBS = ('bench_inputs() { :; }; timeout() { shift; echo "' + " ".join(f"${name}" for name in SWITCHES)
         + ' | $*"; [ "$*" != "${FAIL_ON:-}" ]; }; ')
RUN_ROWS = STUBS + 'eval "$(sed -n "/^bench_e2e_rows() {/,/^}/p" tests/gpu/run_all.sh)"; bench_e2e_rows'
RELEASED = "env.serve_text_only=False"


def rows(**variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOURB": "/m", "BENCH_WORK": "/w", **variables}
    return subprocess.run(["bash", "-c", RUN_ROWS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def command(label: str, *overrides: str) -> str:
    return " ".join(["python3 bench/e2e.py --model /m --work /w --label", label, *overrides])


def test_the_default_rows_run_from_verls_behaviour_to_the_launch_defaults() -> None:
    done = rows()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 8
    assert lines[0] == "0 0 0 0 0 | " + command("baseline", "actor_rollout_ref.ref.fsdp_config.model_dtype=fp32",
                                                RELEASED)
    assert lines[6] == "1 1 1 1 1 | " + command("micro-batches sorted by length", RELEASED)
    assert all(RELEASED in line for line in lines[:7])
    assert lines[7] == "1 1 1 1 1 | " + command("vLLM served text-only")  # nothing added: the launch defaults


def test_named_rows_only_and_a_failed_row_stops_the_stage() -> None:
    done = rows(BENCH_E2E_ROWS="9 12")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1 1 1 1 1 | " + command("packed sequences", "actor_rollout_ref.model.use_remove_padding=True"),
        "1 1 1 1 1 | " + command("no gradient checkpointing",
                                 "actor_rollout_ref.model.enable_gradient_checkpointing=False")]
    failed = rows(BENCH_E2E_ROWS="2 3 4", FAIL_ON=command("bf16 reference", RELEASED))
    assert failed.returncode == 1
    assert len(failed.stdout.splitlines()) == 2  # row 4 never ran
