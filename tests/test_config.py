"""The launch script's Hydra config, composed without a GPU, and the config checks: one clear error each."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from huggingface_hub import HfApi, constants
from omegaconf import OmegaConf
from transformers import BertConfig

from molmo_agent.integrations.verl import validate
from molmo_agent.integrations.verl.validate import (
    accepted_env_keys,
    actor_gpu_memory_gib,
    check_gpu_memory,
    gpu_memory_gib,
    local_model_dir,
    validate_training_config,
)
from molmo_agent.models.molmo2.make_checkpoint import make_checkpoint

from alfworld_games import broken_copy, game_files

ROOT = pathlib.Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "gigpo_trainer" / "run_alfworld_molmo2.sh"


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
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "env_agent"
    # verl's offload parks the weights on the CPU between phases but not during the update: off unless asked.
    assert config.actor_rollout_ref.actor.fsdp_config.param_offload is False
    assert config.actor_rollout_ref.actor.fsdp_config.optimizer_offload is False
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    # Checkpoints and resume are verl's, passed through.
    assert config.trainer.save_freq == 5 and config.trainer.resume_mode == "auto"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.NCCL_NVLS_ENABLE == "0"
    assert "kv_cache_memory_bytes" not in config.actor_rollout_ref.rollout.engine_kwargs.vllm  # vLLM sizes it
    assert "compilation_config" not in config.actor_rollout_ref.rollout.engine_kwargs.vllm  # verl's: compiled
    # ALFWorld shows no pictures: vLLM serves the model text-only (integrations/verl/text_only.py)
    assert json.loads(config.actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides) == {"is_mm_prefix_lm": False}


def test_kv_cache_gb_fixes_vllms_kv_cache(model_dir, data_dir):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable, "KV_CACHE_GB": "3"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = OmegaConf.create(done.stdout)
    assert config.actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes == 3 * 2**30


def test_rollout_compile_0_serves_without_torch_compile(model_dir, data_dir):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable, "ROLLOUT_COMPILE": "0", "KV_CACHE_GB": "3"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    vllm = OmegaConf.create(done.stdout).actor_rollout_ref.rollout.engine_kwargs.vllm
    # a string: verl json-loads it, adds its capture sizes and hands it to vLLM's --compilation-config
    assert json.loads(vllm.compilation_config) == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert vllm.kv_cache_memory_bytes == 3 * 2**30


def test_grpo_baseline_script_selects_grpo(model_dir, data_dir):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT.with_name("run_alfworld_grpo.sh"))], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = OmegaConf.create(done.stdout)
    validate_training_config(config)
    assert config.algorithm.adv_estimator == "grpo" and config.actor_rollout_ref.rollout.n == 8


@pytest.mark.slow
@pytest.mark.parametrize("variables, overrides, message", [
    ({}, ["algorithm.gigpo.mode=std_norm"], "bad config: algorithm.gigpo.mode=std_norm is not a normalization"),
    ({"MODEL_PATH": "molmo-agent-tests/no-such-model", "HF_HUB_OFFLINE": "1"}, [],
     "bad config: actor_rollout_ref.model.path=molmo-agent-tests/no-such-model is neither a local directory nor "
     "reachable on the Hugging Face hub"),
])
def test_dry_run_of_a_bad_config_exits_with_its_one_error(model_dir, data_dir, variables, overrides, message):
    env = {**os.environ, "MODEL_PATH": str(model_dir), "DATA_DIR": str(data_dir), "DRY_RUN": "1",
           "PYTHON": sys.executable, **variables}
    done = subprocess.run(["bash", str(SCRIPT), *overrides], env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout == ""  # no config printed
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-3000:]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_main_job_into_an_empty_data_dir_generates_games_then_dry_runs(tmp_path):
    """The one-command main job on CPU: no data yet -> a small game set, its parquet files, every check, the
    config on stdout; nothing written in the working directory."""
    model = make_checkpoint(str(tmp_path / "molmo2"), "tiny")
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    counts = {"train": 2, "valid_seen": 1, "valid_unseen": 1}
    env = {**os.environ, "MODEL_PATH": model, "DATA_DIR": str(data), "DRY_RUN": "1", "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GAMES_TRAIN": str(counts["train"]), "GAMES_VALID_SEEN": str(counts["valid_seen"]),
           "GAMES_VALID_UNSEEN": str(counts["valid_unseen"])}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    for split, count in counts.items():
        games = pd.read_parquet(data / f"{split}.parquet")["extra_info"]
        assert len(games) == count
        assert all(game["game"].startswith(str(data / "games")) and os.path.isfile(game["game"]) for game in games)
    config = OmegaConf.create(done.stdout)
    assert config.data.train_files == str(data / "train.parquet")
    assert config.actor_rollout_ref.model.path == model
    assert sorted(p.name for p in data.iterdir()) == ["games", "train.parquet", "valid_seen.parquet",
                                                      "valid_unseen.parquet"]
    assert list(cwd.iterdir()) == []


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
    # verl would assert mid-run (prepare_micro_batches): 16 x 8 step samples over 3 GPUs; 2 x 2 over 2 GPUs is 2 a
    # GPU, which micro-batches of 4 cannot split; the log-prob batch, padded to lcm(2, 16 x 8) = 128, is 64 a GPU
    (["trainer.n_gpus_per_node=3"], r"mini-batch .* = 128 step samples\) does not split evenly over the 3"),
    (["trainer.n_gpus_per_node=2", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
      "actor_rollout_ref.rollout.n=2"],
     r"actor.ppo_micro_batch_size_per_gpu=4 does not divide the 2 step samples each of the 2 GPU"),
    (["trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=48"],
     r"rollout.log_prob_micro_batch_size_per_gpu=48 does not divide the 64 step samples"),
])
def test_each_bad_config_gets_one_clear_error(model_dir, data_dir, overrides, message):
    config = compose_config(model_dir, data_dir, *overrides)
    with pytest.raises(ValueError, match=message):
        validate_training_config(config)


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.adv_estimator=gipgo"], r"algorithm.adv_estimator=gipgo is not an advantage estimator: accepted "
                                        r"are \[.*'gigpo'.*'grpo'.*'rloo'"),
    (["algorithm.gigpo.mode=std_norm"], r"algorithm.gigpo.mode=std_norm .* \['mean_norm', 'mean_std_norm'\]"),
    (["algorithm.gamma=1.5"], r"algorithm.gamma=1.5 .* \[0, 1\]"),
    (["algorithm.gamma=-0.1"], r"algorithm.gamma=-0.1 .* \[0, 1\]"),
    (["algorithm.gigpo.step_advantage_w=nan"], "algorithm.gigpo.step_advantage_w=nan must be a finite number"),
    (["algorithm.gigpo.step_advantage_w=inf"], "algorithm.gigpo.step_advantage_w=inf must be a finite number"),
    (["algorithm.gigpo.invalid_action_penalty_coef=nan"],
     "algorithm.gigpo.invalid_action_penalty_coef=nan must be a finite number"),
    (["algorithm.gigpo.similarity_thresh=0"], r"algorithm.gigpo.similarity_thresh=0 .* \(0, 1\]"),
    (["algorithm.gigpo.similarity_thresh=1.5"], r"algorithm.gigpo.similarity_thresh=1.5 .* \(0, 1\]"),
    (["algorithm.use_kl_in_reward=True"], "algorithm.use_kl_in_reward=True is not supported with GiGPO"),
    (["algorithm.compute_mean_std_cross_steps=1"], "algorithm.compute_mean_std_cross_steps=1 is not a boolean"),
    (["algorithm.adv_estimator=rloo", "algorithm.compute_mean_std_cross_steps=True"],
     "compute_mean_std_cross_steps=True applies to gigpo and grpo only, not to algorithm.adv_estimator=rloo"),
    (["algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=True", "algorithm.compute_mean_std_cross_steps=True"],
     "compute_mean_std_cross_steps=True with algorithm.use_kl_in_reward=True is not supported"),
    (["algorithm.rollout_correction.rollout_is=token"], "algorithm.rollout_correction.rollout_is=token is not applied"),
    (["algorithm.adv_estimator=grpo", "algorithm.compute_mean_std_cross_steps=True",
      "algorithm.rollout_correction.rollout_rs=token_k1"], "algorithm.rollout_correction.rollout_rs=token_k1 is not"),
    (["+algorithm.gigpo.step_advantage_weight=0.5"],
     r"unknown key\(s\) under algorithm.gigpo: algorithm.gigpo.step_advantage_weight .*'step_advantage_w'"),
    (["+env.max_step=10"], r"unknown key\(s\) under env: env.max_step .*'max_steps'"),
    (["+env.resources_per_worker.num_gpus=1"],
     r"unknown key\(s\) under env: env.resources_per_worker.num_gpus .*'resources_per_worker.num_cpus'"),
    (["env.reward_invalid_penalty=-0.1"], "env.reward_invalid_penalty must be 0 or more"),
    (["env.require_admissible=no"], "env.require_admissible=no is not a boolean: accepted are True and False"),
    (["env.serve_text_only=1"], "env.serve_text_only=1 is not a boolean"),
    (["env.env_name=alfwrld"], r"env.env_name='alfwrld' is not a registered environment; registered: \['alfworld'"),
    (["data.train_batch_size=0"], "data.train_batch_size .* at least 1, got 0"),
])
def test_each_bad_knob_is_refused_by_name(model_dir, data_dir, overrides, message):
    config = compose_config(model_dir, data_dir, *overrides)
    with pytest.raises(ValueError, match=message):
        validate_training_config(config, check_model=False)


def test_kl_in_reward_is_left_to_verl_for_other_estimators(model_dir, data_dir):
    validate_training_config(compose_config(model_dir, data_dir, "algorithm.adv_estimator=grpo",
                                            "algorithm.use_kl_in_reward=True"), check_model=False)


@pytest.mark.parametrize("overrides", [
    ["algorithm.adv_estimator=grpo", "algorithm.rollout_correction.rollout_is=token"],  # verl's own stage applies it
    ["algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.bypass_mode=True"],  # the actor's
])
def test_rollout_correction_where_something_applies_it(model_dir, data_dir, overrides):
    validate_training_config(compose_config(model_dir, data_dir, *overrides), check_model=False)


def test_env_keys_of_the_loop_are_accepted_and_unknown_environments_refused():
    assert {"env_name", "max_steps", "history_length", "pool_size", "workers_per_pool", "resources_per_worker",
            "resources_per_worker.num_cpus"} <= accepted_env_keys("alfworld")
    assert "win_reward" in accepted_env_keys("alfworld")  # ALFWorld's own knob, from its registry entry
    with pytest.raises(ValueError, match="env.env_name='sokobn' is not a registered environment"):
        accepted_env_keys("sokobn")


def test_a_first_prompt_longer_than_max_prompt_length_is_refused(model_dir, data_dir):
    config = compose_config(model_dir, data_dir, "data.max_prompt_length=100")
    with pytest.raises(ValueError, match=r"data.max_prompt_length=100 is shorter than the first prompt of "
                                         r".*train.parquet .* the alfworld step-0 prompt .* takes \d+ tokens"):
        validate_training_config(config)


def test_a_first_row_that_does_not_start_is_named(tmp_path, model_dir, data_dir):
    broken = broken_copy(game_files()[0], tmp_path, "duplicate_object")
    pd.DataFrame({"extra_info": [{"game": broken, "index": 0}]}).to_parquet(tmp_path / "bad.parquet")
    config = compose_config(model_dir, data_dir, f"data.val_files=[{tmp_path}/bad.parquet]")
    with pytest.raises(ValueError, match=rf"bad.parquet: its first row does not start an episode of alfworld: "
                                         rf"game file {broken}"):
        validate_training_config(config)


def copy_model(model_dir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(model_dir, out / "model"))


def without_weights(model: pathlib.Path) -> None:
    (model / "model.safetensors").unlink()


def truncated(model: pathlib.Path) -> None:
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])


def index_with_missing_shard(model: pathlib.Path) -> None:
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    weight_map = {"lm_head.weight": "model-00001-of-00002.safetensors",
                  "model.norm.weight": "model-00002-of-00002.safetensors"}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def unreadable_config(model: pathlib.Path) -> None:
    (model / "config.json").write_text(json.dumps({"model_type": "no_such_model_type"}))


def encoder_only(model: pathlib.Path) -> None:
    BertConfig(architectures=["BertModel"]).save_pretrained(model)


@pytest.mark.parametrize("damage, message", [
    (without_weights, "holds no weights"),
    (truncated, r"the weights file .*model.safetensors is truncated or not safetensors \(\d+ bytes, its header "
                r"says \d+ bytes\)"),
    (index_with_missing_shard, r"model.safetensors.index.json names shard files that are not in .*"
                               r"\['model-00002-of-00002.safetensors'\]"),
    (unreadable_config, "is not a model transformers can read"),
    (encoder_only, r"is a BertModel \(bert\), which the trainer cannot build as a language model"),
])
def test_a_broken_model_directory_is_refused(tmp_path, model_dir, data_dir, damage, message):
    model = copy_model(model_dir, tmp_path)
    damage(model)
    with pytest.raises(ValueError, match=f"actor_rollout_ref.model.path={model}.*{message}"):
        validate_training_config(compose_config(model, data_dir))


HOW_TO_POINT = r"point MODEL_PATH \(actor_rollout_ref.model.path\) at a local checkpoint directory"


def test_a_missing_model_directory_says_how_to_point_at_a_checkpoint(model_dir, data_dir, tmp_path):
    config = compose_config(tmp_path / "no_model_here", data_dir)
    with pytest.raises(ValueError, match=f"neither a local directory .*nor a hub id.*{HOW_TO_POINT}"):
        validate_training_config(config)


def test_an_unreachable_hub_id_says_how_to_point_at_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as on a node without network, wherever this runs
    with pytest.raises(ValueError, match=f"actor_rollout_ref.model.path=molmo-agent-tests/no-such-model is neither "
                                         f"a local directory nor reachable on the Hugging Face hub.*{HOW_TO_POINT}"):
        local_model_dir("molmo-agent-tests/no-such-model")


def test_a_hub_id_resolves_to_its_cached_snapshot_or_to_the_hub(tmp_path, model_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--org--name" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    shutil.copy(model_dir / "config.json", snapshot)  # what loading only the config leaves in the cache

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert local_model_dir("org/name") == str(snapshot)  # the hub cannot complete it: checked as it is
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kwargs: {"id": repo_id})  # a reachable hub
    assert local_model_dir("org/name") is None  # transformers and vLLM download the rest
    assert local_model_dir("org/not-cached") is None

    shutil.copy(model_dir / "model.safetensors", snapshot)
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kwargs: pytest.fail("asked the hub"))
    assert local_model_dir("org/name") == str(snapshot)  # complete in the cache: no hub needed


def test_good_config_with_existing_wrap_class_passes(model_dir, data_dir):
    validate_training_config(compose_config(
        model_dir, data_dir,
        "+actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Qwen3DecoderLayer]"))


@pytest.mark.parametrize("manager", ["null", "verl.trainer.ppo.v1.agent_loop_tq.AgentLoopManagerTQ"])
def test_molmo2_with_an_agent_loop_manager_that_cannot_rebuild_its_images_is_refused(molmo2_dir, model_dir, data_dir,
                                                                                      manager):
    agent = "actor_rollout_ref.rollout.agent"
    validate_training_config(compose_config(molmo2_dir, data_dir))  # our config's manager passes
    with pytest.raises(ValueError, match=f"{agent}.agent_loop_manager_class=.*a Molmo2 model needs"):
        validate_training_config(compose_config(molmo2_dir, data_dir, f"{agent}.agent_loop_manager_class={manager}"))
    # A text-only model may keep verl's manager.
    validate_training_config(compose_config(model_dir, data_dir, f"{agent}.agent_loop_manager_class={manager}"))


def test_game_data_without_rows_is_refused(tmp_path, model_dir, data_dir):
    pd.DataFrame({"extra_info": []}).to_parquet(tmp_path / "empty.parquet")
    config = compose_config(model_dir, data_dir, f"data.val_files=[{tmp_path}/empty.parquet]")
    with pytest.raises(ValueError, match="no game data found: .*has no rows"):
        validate_training_config(config, check_model=False)


MOLMO2_4B_PARAMS = 4_850_000_000
H100_GIB, H200_GIB = 81559 / 1024, 143771 / 1024  # nvidia-smi's memory.total


def test_actor_memory_of_a_4b_model_per_phase(model_dir, data_dir, monkeypatch):
    config = compose_config(model_dir, data_dir)  # one GPU, fp32 AdamW, no offload, vLLM at 0.5, KL on
    need = actor_gpu_memory_gib(config, MOLMO2_4B_PARAMS, H100_GIB)
    # weights 18.1 + gradients 18.1 + moments 36.1 + foreach temporary 18.1 GiB; vLLM 39.8 + weights + moments;
    # both phases: the reference's bf16 weights (9.0 GiB), kept on the GPU by the plugin's engine
    assert need["update"] == pytest.approx(90.3 + 9.0, abs=0.1)
    assert need["rollout"] == pytest.approx(39.8 + 18.1 + 36.1 + 9.0, abs=0.1)
    without_kl = compose_config(model_dir, data_dir, "actor_rollout_ref.actor.use_kl_loss=False")
    assert actor_gpu_memory_gib(without_kl, MOLMO2_4B_PARAMS, H100_GIB)["update"] == pytest.approx(90.3, abs=0.1)
    ref_offloaded = compose_config(model_dir, data_dir, "actor_rollout_ref.ref.fsdp_config.param_offload=True")
    assert actor_gpu_memory_gib(ref_offloaded, MOLMO2_4B_PARAMS, H100_GIB)["update"] == pytest.approx(90.3, abs=0.1)
    offloaded = compose_config(model_dir, data_dir, "actor_rollout_ref.actor.fsdp_config.param_offload=True",
                               "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True",
                               "actor_rollout_ref.ref.fsdp_config.param_offload=True")
    need = actor_gpu_memory_gib(offloaded, MOLMO2_4B_PARAMS, H100_GIB)
    assert need["update"] == pytest.approx(90.3, abs=0.1) and need["rollout"] == pytest.approx(39.8, abs=0.1)
    fused_on_two = compose_config(model_dir, data_dir, "trainer.n_gpus_per_node=2",
                                  "+actor_rollout_ref.actor.optim.override_optimizer_config.fused=True")
    assert actor_gpu_memory_gib(fused_on_two, MOLMO2_4B_PARAMS, H100_GIB)["update"] == pytest.approx(36.1 + 4.5,
                                                                                                      abs=0.1)
    on_cpu = compose_config(model_dir, data_dir, "actor_rollout_ref.actor.strategy=fsdp2",
                            "actor_rollout_ref.actor.fsdp_config.offload_policy=True")
    assert actor_gpu_memory_gib(on_cpu, MOLMO2_4B_PARAMS, H100_GIB) == {}
    # a fixed KV cache (KV_CACHE_GB): vLLM holds that and its bf16 weights (9.0 GiB, halved at TP 2)
    fixed_cache = compose_config(model_dir, data_dir, "trainer.n_gpus_per_node=2",
                                 "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
                                 "++actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=4294967296")
    assert actor_gpu_memory_gib(fixed_cache, MOLMO2_4B_PARAMS, H100_GIB)["rollout"] == pytest.approx(
        4.0 + 4.5 + 9.0 + 18.1 + 4.5, abs=0.1)
    apart = compose_config(model_dir, data_dir, "actor_rollout_ref.hybrid_engine=False")  # vLLM on other GPUs
    assert set(actor_gpu_memory_gib(apart, MOLMO2_4B_PARAMS, H100_GIB)) == {"update"}
    monkeypatch.setenv("MOLMO_AGENT_REF_ON_GPU", "0")  # verl's forced offload: the reference on the host
    assert actor_gpu_memory_gib(config, MOLMO2_4B_PARAMS, H100_GIB)["update"] == pytest.approx(90.3, abs=0.1)


def test_a_4b_model_on_one_80gb_gpu_is_refused_and_fits_an_h200_or_two_gpus(model_dir, data_dir):
    config = compose_config(model_dir, data_dir)
    with pytest.raises(ValueError, match=r"the actor's update needs at least 99 GiB per GPU .* have 80 GiB"):
        check_gpu_memory(config, MOLMO2_4B_PARAMS, H100_GIB)
    check_gpu_memory(config, MOLMO2_4B_PARAMS, H200_GIB)
    check_gpu_memory(compose_config(model_dir, data_dir, "trainer.n_gpus_per_node=2"), MOLMO2_4B_PARAMS, H100_GIB)


def test_gpu_memory_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 143771\necho 81559\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_memory_gib() == pytest.approx(H100_GIB)  # the smallest GPU
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver.'\n"
                    "exit 9\n")
    assert gpu_memory_gib() is None  # not a crash
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpu_memory_gib() is None


def test_validation_checks_memory_where_it_sees_gpus(model_dir, data_dir, monkeypatch):
    config = compose_config(model_dir, data_dir)
    monkeypatch.setattr(validate, "gpu_memory_gib", lambda: 1e-6)  # not even the tiny model's AdamW state fits
    with pytest.raises(ValueError, match="the actor's update needs at least"):
        validate_training_config(config)
    monkeypatch.setattr(validate, "gpu_memory_gib", lambda: None)
    validate_training_config(config)


def test_ray_workers_get_the_runtime_env_values_not_their_interpolations(model_dir, data_dir, tmp_path,
                                                                          monkeypatch):
    """What main hands ray.init: each `${oc.env:VAR,default}` of runtime_env.env_vars resolved (vLLM's workers
    died on int("${oc.env:VLLM_ALLREDUCE_USE_SYMM_MEM,...}") when it was not), the launching shell's value first."""
    import verl.trainer.main_ppo as main_ppo

    import molmo_agent.main as molmo_main

    class RayInitReached(Exception):
        pass

    def fake_init(**kwargs):
        raise RayInitReached(kwargs)

    monkeypatch.setattr(main_ppo.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(main_ppo.ray, "init", fake_init)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra re-raises the job's exception instead of exiting
    monkeypatch.setenv("VLLM_ALLREDUCE_USE_SYMM_MEM", "1")
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    monkeypatch.setattr(sys, "argv", [
        "main", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null", "hydra/job_logging=none",
        "hydra/hydra_logging=none", f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={data_dir}/train.parquet",
        f"data.val_files=[{data_dir}/valid_seen.parquet,{data_dir}/valid_unseen.parquet]"])
    with pytest.raises(RayInitReached) as reached:
        molmo_main.main()
    env_vars = reached.value.args[0]["runtime_env"]["env_vars"]
    assert env_vars["VLLM_ALLREDUCE_USE_SYMM_MEM"] == "1"  # the shell's value
    assert env_vars["NCCL_NVLS_ENABLE"] == "0"  # the config's default
    assert not [value for value in env_vars.values() if "${" in str(value)], env_vars
