"""The launch script's Hydra config, composed without a GPU, and the config checks: one clear error each."""
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from molmo_agent.integrations.verl.validate import validate_training_config

from alfworld_games import game_files
from tiny_models import make_tiny_qwen3

ROOT = pathlib.Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "gigpo_trainer" / "run_alfworld_molmo2.sh"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """The three parquet files the data-prep script writes, on the committed fixture games."""
    out = tmp_path_factory.mktemp("alfworld_data")
    for split in ("train", "valid_seen", "valid_unseen"):
        rows = [{"data_source": f"alfworld/{split}", "agent_name": "alfworld_agent",
                 "prompt": [{"role": "user", "content": "ALFWorld"}],
                 "extra_info": {"index": i, "game": game, "task_type": "t", "split": split}}
                for i, game in enumerate(game_files())]
        pd.DataFrame(rows).to_parquet(out / f"{split}.parquet")
    return out


def compose_config(model_dir, data_dir, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "molmo_agent" / "config"), version_base=None):
        return compose("alfworld_gigpo", overrides=[
            f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={data_dir}/train.parquet",
            f"data.val_files=[{data_dir}/valid_seen.parquet,{data_dir}/valid_unseen.parquet]", *overrides])


def test_launch_script_config_composes_and_validates(model_dir, data_dir):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable, "GROUP_SIZE": "4", "TRAIN_BATCH": "8", "MAX_STEPS": "10"}
    done = subprocess.run(["bash", str(SCRIPT), "trainer.save_freq=5", "data.max_response_length=128"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = OmegaConf.create(done.stdout)
    validate_training_config(config)
    assert config.actor_rollout_ref.model.path == str(model_dir)
    assert config.actor_rollout_ref.rollout.n == 4 and config.data.train_batch_size == 8
    assert config.env.max_steps == 10 and config.data.max_response_length == 128
    assert config.algorithm.adv_estimator == "gigpo" and config.trainer.v1.trainer_mode == "agent_sync"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "alfworld_agent"
    # One GPU: parameter and optimizer offload on, so Molmo2-4B fits next to vLLM on 80 GB.
    assert config.actor_rollout_ref.actor.fsdp_config.param_offload is True
    assert config.actor_rollout_ref.actor.fsdp_config.optimizer_offload is True
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    # Checkpoints and resume are verl's, passed through.
    assert config.trainer.save_freq == 5 and config.trainer.resume_mode == "auto"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.NCCL_NVLS_ENABLE == "0"


def test_grpo_baseline_script_selects_grpo(model_dir, data_dir):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT.with_name("run_alfworld_grpo.sh"))], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = OmegaConf.create(done.stdout)
    validate_training_config(config)
    assert config.algorithm.adv_estimator == "grpo" and config.actor_rollout_ref.rollout.n == 8


@pytest.mark.parametrize("overrides, message", [
    (["actor_rollout_ref.rollout.n=1"], "group size actor_rollout_ref.rollout.n is 1"),
    (["data.train_files=/nowhere/train.parquet"], "no game data found: data.train_files names /nowhere"),
    (["data.max_response_length=4"], "too short for the action format"),
    (["+actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Molmo2DecoderBlock]"],
     r"\['Molmo2DecoderBlock'\], which Qwen3ForCausalLM does not have"),
    (["trainer.v1.trainer_mode=sync"], "trainer.v1.trainer_mode=agent_sync"),
    (["trainer.use_v1=False"], "trainer.use_v1=True"),
    (["env.workers_per_pool=0"], "env.workers_per_pool must be at least 1"),
    (["env.resources_per_worker.num_cpus=-1"], "env.resources_per_worker.num_cpus must be 0 or more"),
])
def test_each_bad_config_gets_one_clear_error(model_dir, data_dir, overrides, message):
    config = compose_config(model_dir, data_dir, *overrides)
    with pytest.raises(ValueError, match=message):
        validate_training_config(config)


def test_good_config_with_existing_wrap_class_passes(model_dir, data_dir):
    validate_training_config(compose_config(
        model_dir, data_dir,
        "+actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Qwen3DecoderLayer]"))


def test_game_data_without_rows_is_refused(tmp_path, model_dir, data_dir):
    pd.DataFrame({"extra_info": []}).to_parquet(tmp_path / "empty.parquet")
    config = compose_config(model_dir, data_dir, f"data.val_files=[{tmp_path}/empty.parquet]")
    with pytest.raises(ValueError, match="no game data found: .*has no rows"):
        validate_training_config(config, check_model=False)
