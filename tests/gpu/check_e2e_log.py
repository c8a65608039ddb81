"""Reads the logs of tests/gpu/e2e.sh: both iterations of the first run logged finite losses and the
environment and GiGPO metrics; vLLM's token probabilities agree with the trainer's at every step (Pearson
correlation >= MIN_CORRELATION: weights synced, before the first rollout and after each update); validation ran
on every data source of the validation files; and the second run resumed at step 2 and trained step 3. Exits
non-zero, naming the first failed check.

    check_e2e_log.py TRAIN_LOG RESUME_LOG --val-data PARQUET... [--images-per-step N] [--negative LOG]

`--images-per-step`: every step logged `env/images_per_step` = N (an image environment: each step sample has
its picture). `--negative`: the log of a run whose trainer saw zeroed pixels (MOLMO_AGENT_ZERO_TRAINER_PIXELS=1);
there the correlation must fall below MIN_CORRELATION at every step, or the check could not tell whether the
trainer sees the rollout's pixels.
"""
import argparse
import math
import sys

import pandas as pd

from molmo_agent.integrations.verl.eval_report import logged_steps  # verl's console lines, parsed in one place

CORRELATION = "training/rollout_actor_probs_pearson_corr"
REQUIRED = ("actor/pg_loss", "env/success_rate", "env/invalid_action_rate", "env/anchor_group_share",
            "env/images_per_step", "timing_s/gen", "timing_s/update_actor", CORRELATION,
            "training/rollout_probs_diff_max")
# vLLM's engine starts on dummy weights and serves the trainer's only through the weight sync; bf16 rounding on
# both sides leaves the probabilities of the same weights correlated near 1, and unrelated weights near 0.
MIN_CORRELATION = 0.95


def check_step(step: int, metrics: dict[str, float], images_per_step: float | None) -> None:
    missing = [key for key in REQUIRED if key not in metrics]
    assert not missing, f"step {step} lacks {missing}"
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    assert not bad, f"step {step} logged non-finite values {bad}"
    correlation = metrics[CORRELATION]
    assert correlation >= MIN_CORRELATION, f"step {step}: vLLM's and the trainer's token probabilities " \
        f"correlate at {correlation} < {MIN_CORRELATION}: the weights were not synced"
    if images_per_step is not None:
        assert metrics["env/images_per_step"] == images_per_step, \
            f"step {step}: env/images_per_step is {metrics['env/images_per_step']}, expected {images_per_step}"


def check(train_log: str, resume_log: str, sources: list[str], images_per_step: float | None = None) -> None:
    trained = logged_steps(train_log)
    assert sorted(trained) == [1, 2], f"first run logged steps {sorted(trained)}, expected [1, 2]"
    validation = [key for key in trained[2] if key.startswith("val-")]
    for source in sources:
        assert any(f"{source}/acc" in key for key in validation), f"no validation success for {source}"
    resumed = logged_steps(resume_log)
    # A run that did not resume would log steps 1..3; one that resumed from global_step_2 logs step 3 only.
    assert sorted(resumed) == [3], f"second run logged steps {sorted(resumed)}, expected [3] (resume at 2)"
    steps = {**trained, **resumed}
    for step, metrics in steps.items():
        check_step(step, metrics, images_per_step)
    print("e2e ok:", {step: {k: steps[step][k] for k in REQUIRED} for step in steps})


def check_negative(log: str) -> None:
    steps = logged_steps(log)
    assert steps, "the negative control logged no training step"
    for step, metrics in steps.items():
        assert CORRELATION in metrics, f"negative control step {step} lacks {CORRELATION}"
        assert metrics[CORRELATION] < MIN_CORRELATION, f"negative control step {step}: with zeroed pixels the " \
            f"correlation is still {metrics[CORRELATION]} >= {MIN_CORRELATION}: the check cannot see the pixels"
    print("negative control ok:", {step: metrics[CORRELATION] for step, metrics in steps.items()})


def validation_sources(paths: list[str]) -> list[str]:
    """The validation files' data sources (e.g. alfworld/valid_seen), as verl names its validation metrics."""
    return sorted({source for path in paths for source in pd.read_parquet(path, columns=["data_source"])["data_source"]})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_log")
    parser.add_argument("resume_log")
    parser.add_argument("--val-data", nargs="+", required=True, help="the run's validation parquet files")
    parser.add_argument("--images-per-step", type=float, default=None)
    parser.add_argument("--negative", default=None, help="log of the run with zeroed trainer pixels")
    args = parser.parse_args(argv)
    logs = {path: open(path, encoding="utf-8", errors="replace").read()
            for path in (args.train_log, args.resume_log, args.negative) if path}
    try:
        if args.negative:  # first, so that the output ends with the "e2e ok" line
            check_negative(logs[args.negative])
        check(logs[args.train_log], logs[args.resume_log], validation_sources(args.val_data), args.images_per_step)
    except AssertionError as failure:
        sys.exit(f"e2e FAILED: {failure}")

if __name__ == "__main__":
    main(sys.argv[1:])
