"""recipes/alfworld_learning/run.sh's RL runs without a GPU: composed (DRY_RUN=1), the two estimators of a seed
differ only in the advantage, and share the checkpoint, data order, seeds, learning rate and penalty; checkpoints
without AdamW's state are saved on request and resumed with fresh moments; with a stub launcher, a failed run is
retried only after a start-up port race and never marked done."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from molmo_agent.integrations.verl.validate import validate_training_config

ROOT = pathlib.Path(__file__).parents[1]
RECIPE = ROOT / "recipes" / "alfworld_learning" / "run.sh"


def dry_work(tmp_path: pathlib.Path, model_dir, data_dir) -> pathlib.Path:
    """A recipe WORK holding the fixture games' data (also as the fresh RL games) and a checkpoint as its SFT
    model."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "data").symlink_to(data_dir)
    (work / "data_fresh").symlink_to(data_dir)
    (work / "sft_model").symlink_to(model_dir)
    return work


def dry_attempt(work: pathlib.Path, stage: str, **variables: str) -> subprocess.CompletedProcess:
    """The recipe's `stage` with DRY_RUN=1 in `work` (each run's checked config in runs/<run>/config.yaml), with
    the recipe `variables` (MODEL_PATH only where given), whatever its exit."""
    env = {key: value for key, value in os.environ.items() if key != "MODEL_PATH"}
    env.update(WORK=str(work), DRY_RUN="1", PYTHON=sys.executable, **variables)
    return subprocess.run(["bash", str(RECIPE), stage], env=env, capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


def dry_run(work: pathlib.Path, stage: str, **variables: str) -> subprocess.CompletedProcess:
    """dry_attempt, which must succeed."""
    done = dry_attempt(work, stage, **variables)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("gpus", [1, 2])
def test_gigpo_and_grpo_runs_differ_only_in_the_advantage(model_dir, data_dir, tmp_path, gpus):
    work = dry_work(tmp_path, model_dir, data_dir)
    dry_run(work, "rl", SEEDS="3", LR="3e-5", PENALTY="0.2", TEST_FREQ="4", ITERATIONS="12", TEMPERATURE="0.5",
            N_GPUS=str(gpus), REQUIRE_ADMISSIBLE=str(gpus == 2), CROSS_STEPS=str(gpus == 1),
            ROLLOUT_TEMPERATURE="1.5", ROLLOUT_TOP_K="20")
    configs = {name: OmegaConf.load(work / "runs" / f"{name}_seed3" / "config.yaml")
               for name in ("gigpo", "grpo")}
    for name, config in configs.items():
        validate_training_config(config, check_model=False)
        assert not (work / "runs" / f"{name}_seed3" / "done").exists()  # a dry run does not count as finished
        assert config.actor_rollout_ref.model.path == str(work / "sft_model")
        assert config.data.seed == 3 and config.actor_rollout_ref.rollout.seed == 3
        assert config.actor_rollout_ref.actor.optim.lr == 3e-5
        assert config.algorithm.gigpo.invalid_action_penalty_coef == 0.2
        assert config.env.require_admissible is (gpus == 2)
        assert config.algorithm.compute_mean_std_cross_steps is (gpus == 1)
        assert config.trainer.val_before_train is True and config.trainer.test_freq == 4
        assert config.trainer.total_training_steps == 12
        assert config.trainer.validation_data_dir == str(work / "runs" / f"{name}_seed3" / "validation")
        assert config.actor_rollout_ref.rollout.val_kwargs.n == 1
        assert config.actor_rollout_ref.rollout.val_kwargs.temperature == 0.5
        assert (config.actor_rollout_ref.rollout.temperature, config.actor_rollout_ref.rollout.top_k) == (1.5, 20)
        assert config.actor_rollout_ref.rollout.val_kwargs.top_k == -1  # validation samples as before
        # a from-scratch preset: short padded samples, large micro-batches that split each GPU's share evenly,
        # activations kept for the backward (small enough to fit; recomputing them costs a third of the update)
        assert (config.data.max_prompt_length, config.data.max_response_length) == (1024, 128)
        assert config.trainer.n_gpus_per_node == gpus
        assert config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 64 // gpus
        assert config.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu == 128 // gpus
        assert config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu == 128 // gpus
        assert config.actor_rollout_ref.model.enable_gradient_checkpointing is False
    gigpo, grpo = configs["gigpo"], configs["grpo"]
    assert gigpo.algorithm.adv_estimator == "gigpo" and gigpo.algorithm.gigpo.mode == "mean_std_norm"
    assert grpo.algorithm.adv_estimator == "grpo" and grpo.algorithm.norm_adv_by_std_in_grpo is True
    # GRPO trains on the episode return: the same penalty per invalid action reaches it through the agent loop.
    assert grpo.env.reward_invalid_penalty == 0.2 and gigpo.env.reward_invalid_penalty == 0.0
    differing = {key for key in _flat(gigpo) if _flat(gigpo)[key] != _flat(grpo).get(key)}
    assert differing == {"algorithm.adv_estimator", "algorithm.gigpo.mode", "env.reward_invalid_penalty",
                         "trainer.experiment_name", "actor_rollout_ref.rollout.trace.experiment_name",
                         "trainer.default_local_dir", "trainer.validation_data_dir"}


def test_the_defaults_are_the_recorded_runs_setting(model_dir, data_dir, tmp_path):
    """Without variables both estimators run as the latest committed curves did: on fresh games, penalty 0.1 on
    answers out of format (not on unlisted actions), group statistics over step samples, LR 2e-5."""
    work = dry_work(tmp_path, model_dir, data_dir)
    dry_run(work, "rl", SEEDS="0")
    for name in ("gigpo", "grpo"):
        config = OmegaConf.load(work / "runs" / f"{name}_seed0" / "config.yaml")
        assert config.algorithm.gigpo.invalid_action_penalty_coef == 0.1
        assert config.env.require_admissible is False
        assert config.algorithm.compute_mean_std_cross_steps is True
        assert config.actor_rollout_ref.actor.optim.lr == 2e-5
        assert config.data.train_files == str(work / "data_fresh" / "train.parquet")
        assert (config.actor_rollout_ref.rollout.temperature, config.actor_rollout_ref.rollout.top_k) == (1.0, -1)
    assert config.env.reward_invalid_penalty == 0.1  # GRPO's, through its episode return


@pytest.mark.parametrize("variables, refused", [({"ROLLOUT_TEMPERATURE": "1.5"}, True),
                                                ({"ROLLOUT_TEMPERATURE": "1.5", "ROLLOUT_TOP_K": "20"}, False),
                                                ({"ROLLOUT_TEMPERATURE": "0.9"}, False)])
def test_a_from_scratch_preset_samples_above_temperature_one_only_with_a_top_k(model_dir, data_dir, tmp_path,
                                                                              variables, refused):
    done = dry_attempt(dry_work(tmp_path, model_dir, data_dir), "rl-gigpo", SEEDS="0", **variables)
    assert (done.returncode == 2) is refused, done.stderr[-2000:]
    assert ("needs ROLLOUT_TOP_K" in done.stderr) is refused


def test_fresh_rl_games_train_on_their_own_file_and_validate_as_before(model_dir, data_dir, tmp_path):
    work = dry_work(tmp_path, model_dir, data_dir)
    (work / "data_fresh").unlink()
    missing = dry_attempt(work, "rl-gigpo", SEEDS="0", RL_GAMES="fresh")
    assert missing.returncode != 0 and "data_fresh/train.parquet is missing" in missing.stderr
    (work / "data_fresh").mkdir()
    shutil.copy(data_dir / "train.parquet", work / "data_fresh" / "train.parquet")
    dry_run(work, "rl-gigpo", SEEDS="0", RL_GAMES="fresh")
    config = OmegaConf.load(work / "runs" / "gigpo_seed0" / "config.yaml")
    assert config.data.train_files == str(work / "data_fresh" / "train.parquet")
    assert list(config.data.val_files) == [str(work / "data" / f"{split}.parquet")
                                           for split in ("valid_seen", "valid_unseen")]
    dry_run(work, "rl-grpo", SEEDS="0", RL_GAMES="demonstrated")
    config = OmegaConf.load(work / "runs" / "grpo_seed0" / "config.yaml")
    assert config.data.train_files == str(work / "data" / "train.parquet")
    wrong = dry_attempt(work, "rl-gigpo", SEEDS="0", RL_GAMES="unseen")
    assert wrong.returncode == 2 and "RL_GAMES must be demonstrated or fresh, not 'unseen'" in wrong.stderr


def test_the_games_stage_makes_fresh_games_after_the_demonstrated_ones(model_dir, data_dir, tmp_path):
    """GAMES_TRAIN=2 with RL_GAMES=fresh: training games 2 and 3 of the seed, none of the demonstrated 0 and 1."""
    import pandas as pd

    work = dry_work(tmp_path, model_dir, data_dir)
    (work / "data_fresh").unlink()  # the stage makes them
    dry_run(work, "games", GAMES_TRAIN="2", RL_GAMES="fresh")
    rows = pd.read_parquet(work / "data_fresh" / "train.parquet")
    assert sorted(pathlib.Path(info["game"]).parent.name for info in rows.extra_info) == [
        "trial_T0_000002", "trial_T0_000003"]
    assert not (work / "data_fresh" / "valid_unseen.parquet").exists()


def test_a_named_model_keeps_the_configs_batch_shape(model_dir, data_dir, tmp_path):
    work = dry_work(tmp_path, model_dir, data_dir)
    dry_run(work, "rl-gigpo", SEEDS="0", MODEL_PATH=str(model_dir))
    config = OmegaConf.load(work / "runs" / "gigpo_seed0" / "config.yaml")
    default = OmegaConf.load(ROOT / "molmo_agent" / "config" / "alfworld_gigpo.yaml").actor_rollout_ref
    assert config.actor_rollout_ref.model.enable_gradient_checkpointing is True
    assert (config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu
            == default.actor.ppo_micro_batch_size_per_gpu)


FULL = ["model", "optimizer", "extra"]
WEIGHTS_AND_STATE = ["model", "extra"]


@pytest.mark.parametrize("save_optimizer, carried, saves, loads", [
    ("1", None, FULL, FULL),
    ("0", None, WEIGHTS_AND_STATE, WEIGHTS_AND_STATE),
    ("1", ["model_world_size_1_rank_0.pt", "optim_world_size_1_rank_0.pt"], FULL, FULL),
    # carried from another machine without AdamW's state: resumed with fresh moments, and said so
    ("1", ["model_world_size_1_rank_0.pt", "extra_state_world_size_1_rank_0.pt"], FULL, WEIGHTS_AND_STATE),
])
def test_a_checkpoint_without_the_optimizer_resumes_with_fresh_moments(model_dir, data_dir, tmp_path,
                                                                       save_optimizer, carried, saves, loads):
    work = dry_work(tmp_path, model_dir, data_dir)
    ckpt = work / "runs" / "grpo_seed1" / "ckpt"
    if carried:
        (ckpt / "global_step_7" / "actor").mkdir(parents=True)
        (ckpt / "latest_checkpointed_iteration.txt").write_text("7")
        for name in carried:
            (ckpt / "global_step_7" / "actor" / name).write_bytes(b"")
    done = dry_run(work, "rl-grpo", SEEDS="1", TEST_FREQ="3", SAVE_FREQ="1", SAVE_OPTIMIZER=save_optimizer)
    config = OmegaConf.load(work / "runs" / "grpo_seed1" / "config.yaml")
    assert config.trainer.save_freq == 1 and config.trainer.test_freq == 3
    assert list(config.actor_rollout_ref.actor.checkpoint.save_contents) == saves
    assert list(config.actor_rollout_ref.actor.checkpoint.load_contents) == loads
    fresh = "resumes from iteration 7's weights with fresh AdamW moments"
    assert (fresh in done.stdout) == (loads != saves)


def _flat(config) -> dict:
    return {key: value for key, value in _items(OmegaConf.to_container(config), "")}


def _items(node, prefix):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _items(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


@pytest.mark.parametrize("failure, attempts, done", [
    ("torch.distributed.DistNetworkError: ... EADDRINUSE, message: address already in use", 2, True),
    ("CUDA out of memory", 1, False),
])
def test_only_a_start_up_port_race_is_retried_and_a_crashed_run_is_never_done(tmp_path, failure, attempts, done):
    # the recipe in a throw-away tree whose launcher fails once with `failure`, then succeeds
    repo = tmp_path / "repo"
    (repo / "recipes" / "alfworld_learning").mkdir(parents=True)
    (repo / "examples" / "gigpo_trainer").mkdir(parents=True)
    shutil.copy(RECIPE, repo / "recipes" / "alfworld_learning" / "run.sh")
    (repo / "examples" / "gigpo_trainer" / "run_alfworld_molmo2.sh").write_text(
        f'echo attempt >> "$WORK/attempts"\n'
        f'[ "$(wc -l < "$WORK/attempts")" -gt 1 ] && echo "step:1 - trained" && exit 0\n'
        f'echo "{failure}"; exit 1\n')
    work = tmp_path / "work"
    env = {**os.environ, "WORK": str(work), "SEEDS": "0", "RAY_STOP": "0", "PYTHON": sys.executable,
           "RL_GAMES": "demonstrated"}  # no games here: the launcher is a stub
    env.pop("DRY_RUN", None)
    finished = subprocess.run(["bash", str(repo / "recipes" / "alfworld_learning" / "run.sh"), "rl-gigpo"], env=env,
                              capture_output=True, text=True, timeout=60)
    run = work / "runs" / "gigpo_seed0"
    assert (work / "attempts").read_text().count("attempt") == attempts
    assert (run / "done").exists() == done and (finished.returncode == 0) == done
    assert failure in (run / "train.log").read_text()


def test_sft_rows_end_where_the_rl_runs_end_episodes(tmp_path):
    """The sft-data stage gives the rows the RL runs' episode limit, history window and token limits: a
    demonstration longer than MAX_STEPS would teach steps no RL episode reaches (the expert's longest
    demonstrations are its loops)."""
    work = tmp_path / "work"
    work.mkdir()
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "$@" > "$WORK/sft_data_args"\n')
    stub.chmod(0o755)
    env = {**os.environ, "WORK": str(work), "PYTHON": str(stub), "MAX_STEPS": "17", "HISTORY": "3",
           "MAX_PROMPT": "900", "MAX_RESPONSE": "100"}
    done = subprocess.run(["bash", str(RECIPE), "sft-data"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    args = (work / "sft_data_args").read_text().split()
    assert args[:2] == ["-m", "molmo_agent.integrations.verl.sft_data"]
    assert {"env.max_steps=17", "env.history_length=3", "data.max_prompt_length=900",
            "data.max_response_length=100"} <= set(args)
    assert "--relabel" not in args
    assert args[args.index("--thought") + 1] == "plain"  # the measured thought, unless SFT_THOUGHT says otherwise
    # SFT_RELABEL: each file of a policy's episodes is relabeled into the train rows (DAgger)
    (work / "sft_data_args").unlink()
    env["SFT_RELABEL"] = "/runs/a.jsonl.gz /runs/b.jsonl"
    env["SFT_THOUGHT"] = "sighting"
    done = subprocess.run(["bash", str(RECIPE), "sft-data"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    args = (work / "sft_data_args").read_text().split()
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--relabel"] == ["/runs/a.jsonl.gz", "/runs/b.jsonl"]
    assert args[args.index("--thought") + 1] == "sighting"
