"""Checks of a composed training config that fail at once with one clear error, before Ray and GPUs start.

verl validates its own fields (`verl.utils.config.validate_config`); these are the ones our pieces add: the
agent loop needs verl's V1 trainer, GiGPO needs groups and our trainer, the dataset must list games, the model
must be able to answer in the action format, the FSDP wrap classes must exist in the model, and the actor's
AdamW state must fit the GPUs (a 4B model on one 80 GB GPU otherwise fails minutes later, at its first update).
"""
import os
import shutil
import subprocess

import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from verl.utils.model import get_hf_auto_model_class

from molmo_agent.integrations.verl.advantage import GIGPO
from molmo_agent.integrations.verl.agent_loop import AGENT_NAME
from molmo_agent.integrations.verl.trainer import TRAINER_MODE

# The shortest answer in the action format, and the end-of-sequence token after it.
SHORTEST_ANSWER = "<action>look</action>"


def validate_training_config(config: DictConfig, *, check_model: bool = True) -> None:
    """Raise one ValueError naming the first problem found in `config`; `check_model` loads the tokenizer and
    builds the model on the meta device (no weights) for the checks that need them."""
    check_trainer(config)
    check_group_size(config)
    check_environment(config)
    for key in ("train_files", "val_files"):
        check_game_data(config.data[key], f"data.{key}")
    if check_model:
        model_path = config.actor_rollout_ref.model.path
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        check_response_length(config.data.max_response_length, tokenizer)
        wrap = config.actor_rollout_ref.actor.fsdp_config.get("wrap_policy", {}).get("transformer_layer_cls_to_wrap")
        gpu_gib = gpu_memory_gib()
        if wrap or gpu_gib is not None:
            model = meta_model(model_path)
            if wrap:
                check_fsdp_wrap_classes(model, list(wrap))
            if gpu_gib is not None:
                check_gpu_memory(config, sum(p.numel() for p in model.parameters()), gpu_gib)


def check_trainer(config: DictConfig) -> None:
    if not config.trainer.use_v1:
        raise ValueError("trainer.use_v1=False: the agent loop returns one sample per step, which only verl's V1 "
                         "trainer takes; set trainer.use_v1=True")
    estimator, mode = config.algorithm.adv_estimator, config.trainer.v1.trainer_mode
    if estimator == GIGPO and mode != TRAINER_MODE:
        raise ValueError(f"algorithm.adv_estimator=gigpo needs our trainer: set trainer.v1.trainer_mode="
                         f"{TRAINER_MODE} (got {mode})")


def check_group_size(config: DictConfig) -> None:
    n = config.actor_rollout_ref.rollout.n
    if config.algorithm.adv_estimator in (GIGPO, "grpo", "rloo") and n < 2:
        raise ValueError(f"algorithm.adv_estimator={config.algorithm.adv_estimator} compares the G trajectories "
                         f"of a group, but the group size actor_rollout_ref.rollout.n is {n}: set it to 2 or more")


def check_environment(config: DictConfig) -> None:
    env = config.env
    if env.max_steps < 1:
        raise ValueError(f"env.max_steps must be at least 1, got {env.max_steps}")
    if env.history_length < 0:
        raise ValueError(f"env.history_length must be 0 or more, got {env.history_length}")
    for knob in ("pool_size", "workers_per_pool"):
        if env.get(knob) is not None and env[knob] < 1:
            raise ValueError(f"env.{knob} must be at least 1 (or null for the default), got {env[knob]}")
    if env.resources_per_worker.num_cpus < 0:
        raise ValueError(f"env.resources_per_worker.num_cpus must be 0 or more, got "
                         f"{env.resources_per_worker.num_cpus}")
    agent = config.actor_rollout_ref.rollout.agent.default_agent_loop
    if agent != AGENT_NAME:
        raise ValueError(f"actor_rollout_ref.rollout.agent.default_agent_loop is {agent}; the environment "
                         f"training needs {AGENT_NAME}")


def check_game_data(files: str | list[str] | ListConfig, name: str) -> None:
    """Every parquet file exists and lists at least one game whose path exists."""
    paths = [files] if isinstance(files, str) else list(files)
    if not paths:
        raise ValueError(f"no game data found: {name} is empty")
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"no game data found: {name} names {path}, which does not exist (write it with "
                             f"`python examples/data_preprocess/alfworld.py --data ROOT --out DIR`)")
        games = pd.read_parquet(path, columns=["extra_info"])["extra_info"]
        if len(games) == 0:
            raise ValueError(f"no game data found: {path} ({name}) has no rows")
        first = games.iloc[0]["game"]
        if not os.path.exists(first):
            raise ValueError(f"no game data found: {path} ({name}) names the game {first}, which does not exist "
                             f"on this machine")


def check_response_length(max_response_length: int, tokenizer: PreTrainedTokenizerBase) -> None:
    """The shortest well-formed answer plus its end-of-sequence token must fit in the response."""
    needed = len(tokenizer.encode(SHORTEST_ANSWER, add_special_tokens=False)) + 1
    if max_response_length < needed:
        raise ValueError(f"data.max_response_length={max_response_length} is too short for the action format: "
                         f"'{SHORTEST_ANSWER}' and its end token take {needed} tokens with this tokenizer")


def meta_model(model_path: str) -> torch.nn.Module:
    """The model verl will train, built on the meta device (shapes, no weights)."""
    hf_config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        return get_hf_auto_model_class(hf_config).from_config(hf_config)


def check_fsdp_wrap_classes(model: torch.nn.Module, class_names: list[str]) -> None:
    """Each class named for FSDP wrapping is a module class of the model."""
    present = {type(module).__name__ for module in model.modules()}
    missing = [name for name in class_names if name not in present]
    if missing:
        blocks = sorted(getattr(model, "_no_split_modules", None) or [])
        raise ValueError(f"actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap names "
                         f"{missing}, which {type(model).__name__} does not have; its blocks: {blocks}")


def gpu_memory_gib() -> float | None:
    """The smallest GPU's memory on this machine, from nvidia-smi (no CUDA context in this process); None when
    there is no NVIDIA GPU here or nvidia-smi cannot tell (a Ray head without one: the check is skipped)."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True)
    try:  # a driver that is not loaded answers with a sentence and a nonzero status
        sizes = [float(line) for line in done.stdout.split()] if done.returncode == 0 else []
    except ValueError:
        return None
    return min(sizes) / 1024 if sizes else None


def actor_gpu_memory_gib(config: DictConfig, num_params: int, gpu_gib: float) -> dict[str, float]:
    """Lower bounds of one GPU's memory in the two phases of an iteration, for AdamW under verl's FSDP engine
    (activations, CUDA context and fragmentation come on top); {} when the actor's optimizer runs on the CPU
    (FSDP2 `offload_policy`) or is not a full-parameter AdamW.

    update: the actor's weights, gradients and AdamW's two moments in `model_dtype`, plus the full-size
      temporary of torch's foreach step (not with `fused`); verl's `param_offload` / `optimizer_offload` move
      them back to the GPU for the update, so they do not lower this.
    rollout (vLLM colocated, `hybrid_engine`): vLLM's `gpu_memory_utilization` share next to what stays of the
      actor (weights unless `param_offload`, the moments unless `optimizer_offload`). The reference model lives
      on the CPU.
    """
    actor = config.actor_rollout_ref.actor
    fsdp, optim = actor.fsdp_config, actor.optim
    if (fsdp.get("offload_policy") or actor.strategy not in ("fsdp", "fsdp2") or optim.optimizer not in
            ("AdamW", "Adam") or config.actor_rollout_ref.model.get("lora_rank", 0)):
        return {}
    shards = _training_gpus(config) if fsdp.fsdp_size in (-1, None) else fsdp.fsdp_size
    width = 4 if str(fsdp.model_dtype) in ("fp32", "float32") else 2  # bytes per weight, gradient or moment
    fused = bool((optim.get("override_optimizer_config") or {}).get("fused", False))
    per_shard = num_params / shards / 2**30
    weights, moments = width * per_shard, 2 * width * per_shard
    need = {"update": weights * 2 + moments + (0 if fused else weights)}
    if config.actor_rollout_ref.get("hybrid_engine", True):  # vLLM on the training GPUs
        vllm = config.actor_rollout_ref.rollout.gpu_memory_utilization * gpu_gib
        need["rollout"] = vllm + (0 if fsdp.param_offload else weights) + (0 if fsdp.optimizer_offload else moments)
    return need


def check_gpu_memory(config: DictConfig, num_params: int, gpu_gib: float) -> None:
    """The actor's AdamW state (and vLLM's share at rollout) fit each GPU, by `actor_gpu_memory_gib`."""
    for phase, need in actor_gpu_memory_gib(config, num_params, gpu_gib).items():
        if need > gpu_gib:
            raise ValueError(
                f"the actor's {phase} needs at least {need:.0f} GiB per GPU ({num_params / 1e9:.2f}B parameters, "
                f"AdamW in {config.actor_rollout_ref.actor.fsdp_config.model_dtype}, FSDP over "
                f"{_training_gpus(config)} GPU(s)) and this machine's GPUs have "
                f"{gpu_gib:.0f} GiB: use more GPUs (FSDP shards the weights and AdamW's state over them), GPUs "
                f"with more memory, or run AdamW on the CPU (actor_rollout_ref.actor.strategy=fsdp2 "
                f"actor_rollout_ref.actor.fsdp_config.offload_policy=True: ~20 bytes of host RAM per parameter)")


def _training_gpus(config: DictConfig) -> int:
    return config.trainer.n_gpus_per_node * config.trainer.nnodes
