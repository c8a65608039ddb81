"""tests/gpu/check_e2e_log.py reads verl's console lines as the GPU run prints them (Ray's actor prefix, numpy
scalars) and fails on a run that did not sync weights or did not resume."""
import pandas as pd
import pytest
from check_e2e_log import check, check_negative, main
from molmo_agent.integrations.verl.eval_report import logged_steps

PREFIX = "\x1b[36m(TaskRunnerV1 pid=2510)\x1b[0m "


def step_line(step: int, correlation: float = 0.9996, validation: bool = False) -> str:
    metrics = {
        "actor/pg_loss": "2.5e-05", "env/success_rate": "0.0", "env/invalid_action_rate": "1.0",
        "env/anchor_group_share": "1.0", "env/images_per_step": "0.0", "timing_s/gen": "22.25", "timing_s/update_actor": "1.89",
        "training/rollout_actor_probs_pearson_corr": str(correlation), "training/rollout_probs_diff_max": "0.029",
        "training/off_policy/trajectory_staleness/max": "np.int64(0)",
    }
    if validation:
        metrics.update({f"val-core/alfworld/{split}/acc/mean@1": "np.float64(0.0)"
                        for split in ("valid_seen", "valid_unseen")})
    return PREFIX + f"step:{step} - " + " - ".join(f"{k}:{v}" for k, v in metrics.items())


TRAIN_LOG = "\n".join(["noise", step_line(1), "more noise", step_line(2, validation=True)])


def test_reads_prefixed_lines_and_numpy_scalars():
    steps = logged_steps(TRAIN_LOG)
    assert sorted(steps) == [1, 2]
    assert steps[1]["training/off_policy/trajectory_staleness/max"] == 0.0
    assert steps[2]["val-core/alfworld/valid_seen/acc/mean@1"] == 0.0


SOURCES = ["alfworld/valid_seen", "alfworld/valid_unseen"]


def test_passes_a_synced_resumed_run():
    check(TRAIN_LOG, step_line(3), SOURCES)


def test_needs_validation_of_every_source_and_the_images_asked_for():
    with pytest.raises(AssertionError, match="no validation success for sokoban/valid"):
        check(TRAIN_LOG, step_line(3), ["sokoban/valid"])
    with pytest.raises(AssertionError, match="images_per_step is 0.0, expected 1"):
        check(TRAIN_LOG, step_line(3), SOURCES, images_per_step=1)


def test_negative_control_must_lose_the_correlation():
    check_negative(step_line(1, correlation=0.6))
    with pytest.raises(AssertionError, match="cannot see the pixels"):
        check_negative(step_line(1, correlation=0.99))


def test_command_reads_the_sources_from_the_validation_files(tmp_path, capsys):
    pd.DataFrame({"data_source": ["alfworld/valid_seen", "alfworld/valid_unseen"]}).to_parquet(tmp_path / "v.parquet")
    logs = {name: tmp_path / name for name in ("train.log", "resume.log", "negative.log")}
    logs["train.log"].write_text(TRAIN_LOG)
    logs["resume.log"].write_text(step_line(3))
    logs["negative.log"].write_text(step_line(1, correlation=0.5))
    main([str(logs["train.log"]), str(logs["resume.log"]), "--val-data", str(tmp_path / "v.parquet"),
          "--negative", str(logs["negative.log"])])
    assert capsys.readouterr().out.splitlines()[-1].startswith("e2e ok:")


@pytest.mark.parametrize("resume_log, message", [
    (step_line(3, correlation=0.1), "weights were not synced"),
    ("\n".join([step_line(1), step_line(2), step_line(3)]), "resume at 2"),
])
def test_fails_without_sync_or_resume(resume_log, message):
    with pytest.raises(AssertionError, match=message):
        check(TRAIN_LOG, resume_log, SOURCES)
