"""The evaluation: verl's validation metrics of our episodes, as its console logs them, read back as success per
split and task type; and the evaluation script's config (validation only, every game once, one temperature)."""
import gzip
import json
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from verl.utils.logger.aggregate_logger import concat_dict_to_str

from molmo_agent.envs.metrics import EpisodeRecord, episode_metrics
from molmo_agent.integrations.verl.eval_report import main, read_console_log, report, validation_points
from molmo_agent.integrations.verl.trainer import AgentTrainer

REPO = pathlib.Path(__file__).parents[1]
SCRIPT = REPO / "examples" / "gigpo_trainer" / "eval_alfworld.sh"
# (split, task type, won) of each finished episode; valid_seen's third game's environment failed (no episode).
EPISODES = [("valid_seen", "pick_and_place_simple", True), ("valid_seen", "pick_clean_then_place_in_recep", False),
            ("valid_unseen", "pick_and_place_simple", False), ("valid_unseen", "pick_and_place_simple", True)]
GAMES = {"valid_seen": 3, "valid_unseen": 2}


def validation_log(step: int) -> str:
    """verl's console line of a validation of EPISODES: our trainer's metric keys (verl's `_val_metrics_update`,
    which reads no trainer state) over the `reward_extra_info` our agent loop gives each episode, filled per key as verl fills it."""
    sources, uids, infos = [], [], {"reward": []}
    for index, (split, task_type, won) in enumerate(EPISODES):
        summary = {"acc": float(won), **episode_metrics([EpisodeRecord(task_type, won, 5, 1, 3)])}
        for key in infos:
            infos[key].append(summary.get(key, 0.0 if key == "reward" else None))
        for key in summary.keys() - infos.keys():
            infos[key] = [None] * index + [summary[key]]
        sources.append(f"alfworld/{split}")
        uids.append(f"{split}-{index}")
    expected = {(f"alfworld/{split}", f"{split}-{i}"): 1 for i, (split, _, _) in enumerate(EPISODES)}
    expected[("alfworld/valid_seen", "valid_seen-dropped")] = 1
    metrics = AgentTrainer._val_metrics_update(None, sources, uids, infos, [2] * len(EPISODES),
                                                 expected_acc_counts=expected)
    return f"(TaskRunnerV1 pid=4242) {concat_dict_to_str(metrics, step=step)}\n"


@pytest.fixture
def val_files(tmp_path) -> list[str]:
    paths = []
    for split, count in GAMES.items():
        paths.append(str(tmp_path / f"{split}.parquet"))
        pd.DataFrame({"data_source": [f"alfworld/{split}"] * count}).to_parquet(paths[-1])
    return paths


def test_validation_metrics_read_back_per_split_and_task_type():
    log = "Training Progress: 0it\n" + validation_log(0) + "step:1 - actor/pg_loss:0.1\n" + validation_log(5)
    points = validation_points(log)
    assert sorted(points) == [0, 5]
    seen, unseen = points[5]["valid_seen"], points[5]["valid_unseen"]
    assert seen["success"] == pytest.approx(1 / 3)  # the failed environment counts as a lost game
    assert seen["success_by_task_type"] == {"pick_and_place_simple": 1.0, "pick_clean_then_place_in_recep": 0.0}
    assert unseen["success"] == 0.5 and unseen["success_by_task_type"] == {"pick_and_place_simple": 0.5}
    assert seen["episode_length"] == 5 and seen["invalid_action_rate"] == pytest.approx(0.2)
    assert seen["inadmissible_action_rate"] == pytest.approx(0.6)


def test_report_is_the_last_validation_with_its_games(val_files):
    result = report(validation_log(0) + validation_log(10), val_files, "ckpt/huggingface", 0.4, "eval")
    assert result["step"] == 10 and result["temperature"] == 0.4 and result["model"] == "ckpt/huggingface"
    assert result["splits"]["valid_seen"]["games"] == 3 and result["splits"]["valid_unseen"]["games"] == 2
    assert result["splits"]["valid_unseen"]["success"] == 0.5


def test_command_writes_json_and_refuses_a_log_without_a_split(val_files, tmp_path, capsys):
    log = tmp_path / "eval.log"
    log.write_text(validation_log(0))
    out = tmp_path / "eval.json"
    main([str(log), "--model", "m", "--temperature", "0", "--val-files", *val_files, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    log.write_text(" - ".join(item for item in validation_log(0).split(" - ") if "valid_unseen" not in item))
    with pytest.raises(SystemExit, match=r"no metrics for \['valid_unseen'\]"):
        main([str(log), "--model", "m", "--temperature", "0", "--val-files", *val_files])
    log.write_text("step:3 - actor/pg_loss:0.1\n")
    with pytest.raises(SystemExit, match="no validation metrics"):
        main([str(log), "--model", "m", "--temperature", "0", "--val-files", *val_files])


def test_evaluation_script_runs_validation_only_on_every_game_once(molmo2_dir, data_dir, tmp_path):
    env = {**os.environ, "DATA_DIR": str(data_dir), "DRY_RUN": "1", "TEMPERATURE": "0", "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(SCRIPT), str(molmo2_dir), "env.max_steps=30"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load(done.stdout)
    trainer, val_kwargs = config["trainer"], config["actor_rollout_ref"]["rollout"]["val_kwargs"]
    assert trainer["val_only"] is True and trainer["val_before_train"] is True
    assert trainer["resume_mode"] == "disable"  # never a leftover checkpoint in place of the model
    assert val_kwargs == {**val_kwargs, "n": 1, "temperature": 0.0, "do_sample": False}
    assert config["data"]["val_files"] == [str(data_dir / "valid_seen.parquet"), str(data_dir / "valid_unseen.parquet")]
    assert config["data"]["val_batch_size"] is None  # one batch: every game of both splits
    assert config["actor_rollout_ref"]["model"]["path"] == str(molmo2_dir) and config["env"]["max_steps"] == 30
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_console_logs_are_read_gzipped_or_not(tmp_path):
    text = "step:1 - actor/entropy:0.5\n(TaskRunner pid=1) caf\u00e9 \n"
    plain, packed = tmp_path / "run.log", tmp_path / "run.log.gz"
    plain.write_bytes(text.encode() + b"\xff\n")  # a byte that is not UTF-8: replaced, not an error
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(text)
    assert read_console_log(packed) == text
    assert read_console_log(str(plain)) == text + "\ufffd\n"
