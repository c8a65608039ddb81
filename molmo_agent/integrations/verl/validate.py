"""Checks of a composed training config that fail at once with one clear error, before Ray and GPUs start.

verl validates its own fields (`verl.utils.config.validate_config`); these are the ones our pieces add: the
agent loop needs verl's V1 trainer, the advantage estimator must exist and GiGPO's knobs must be usable (a NaN
weight makes every advantage NaN), GiGPO needs groups and our trainer, no key under `env` or `algorithm.gigpo`
may be a typo (they would be ignored), the dataset must list games, the model directory must hold a complete
checkpoint the trainer can build, the first prompt must fit `data.max_prompt_length`, the model must be able to
answer in the action format, the FSDP wrap classes must exist in the model, and the actor's AdamW state must fit
the GPUs (a 4B model on one 80 GB GPU otherwise fails minutes later, at its first update).
"""
import json
import math
import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from omegaconf import DictConfig, ListConfig
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
from verl.utils.import_utils import load_class_from_fqn
from verl.utils.model import get_hf_auto_model_class
from verl.utils.transformers_compat import get_auto_model_for_vision2seq

from molmo_agent.algorithms.gigpo import MODES
from molmo_agent.integrations.verl.advantage import DEFAULTS as GIGPO_DEFAULTS
from molmo_agent.integrations.verl.advantage import CROSS_STEPS, GIGPO
from molmo_agent.envs.base import observation_text
from molmo_agent.envs.registry import get_env, make_env
from molmo_agent.models.molmo2 import Molmo2Config
from molmo_agent.integrations.verl import reference
from molmo_agent.integrations.verl.agent_loop import AGENT_NAME, LOOP_KEYS, env_knobs
from molmo_agent.integrations.verl.multimodal import AgentLoopManager
from molmo_agent.integrations.verl.trainer import TRAINER_MODE

# The shortest answer in the action format, and the end-of-sequence token after it.
SHORTEST_ANSWER = "<action>look</action>"

# The agent loop's own keys under `env`; a dotted key lists the accepted subkeys of a section.
LOOP_ENV_KEYS = LOOP_KEYS | {"resources_per_worker.num_cpus"}

# The model classes verl's FSDP actor can train (`get_hf_auto_model_class` falls back to a headless AutoModel).
TRAINABLE_MODEL_CLASSES = (AutoModelForCausalLM, AutoModelForImageTextToText, get_auto_model_for_vision2seq())
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_TIMEOUT_S = 10.0


def validate_training_config(config: DictConfig, *, check_model: bool = True) -> None:
    """Raise one ValueError naming the first problem found in `config`; `check_model` checks the model directory,
    loads the tokenizer, renders the first prompt, and builds the model on the meta device (no weights) for the
    checks that need them."""
    check_trainer(config)
    check_algorithm(config.algorithm)
    check_group_size(config)
    check_micro_batches(config)
    check_environment(config)
    if config.data.train_batch_size < 1:
        raise ValueError(f"data.train_batch_size is the number of games per iteration: at least 1, got "
                         f"{config.data.train_batch_size}")
    for key in ("train_files", "val_files"):
        check_game_data(config.data[key], f"data.{key}")
    if check_model:
        model_path = config.actor_rollout_ref.model.path
        trust_remote_code = bool(config.actor_rollout_ref.model.get("trust_remote_code", False))
        local_dir = local_model_dir(model_path)
        if local_dir is not None:
            check_weights(local_dir, model_path)
        hf_config = model_config(model_path, trust_remote_code)
        check_trainable_model(hf_config, model_path)
        check_agent_loop_manager(config.actor_rollout_ref.rollout.agent, hf_config)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise ValueError(f"actor_rollout_ref.model.path={model_path}: its tokenizer does not load: "
                             f"{_first_line(error)}") from None
        check_response_length(config.data.max_response_length, tokenizer)
        check_first_prompts(config, tokenizer)
        wrap = config.actor_rollout_ref.actor.fsdp_config.get("wrap_policy", {}).get("transformer_layer_cls_to_wrap")
        gpu_gib = gpu_memory_gib()
        if wrap or gpu_gib is not None:
            model = meta_model(hf_config)
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


def check_algorithm(algorithm: DictConfig) -> None:
    """The estimator is registered; gamma is a discount; GiGPO's knobs are known, finite and in range."""
    accepted = sorted(set(ADV_ESTIMATOR_REGISTRY) | {GIGPO})
    if algorithm.adv_estimator not in accepted:
        raise ValueError(f"algorithm.adv_estimator={algorithm.adv_estimator} is not an advantage estimator: "
                         f"accepted are {accepted}")
    if not _is_number(algorithm.gamma) or not 0.0 <= algorithm.gamma <= 1.0:
        raise ValueError(f"algorithm.gamma={algorithm.gamma} is not a discount: accepted are numbers in [0, 1]")
    gigpo = algorithm.get("gigpo") or {}
    check_known_keys(gigpo, set(GIGPO_DEFAULTS), "algorithm.gigpo")
    if gigpo.get("mode", GIGPO_DEFAULTS["mode"]) not in MODES:
        raise ValueError(f"algorithm.gigpo.mode={gigpo.mode} is not a normalization: accepted are {list(MODES)}")
    for knob in ("step_advantage_w", "invalid_action_penalty_coef"):
        if not _is_number(value := gigpo.get(knob, GIGPO_DEFAULTS[knob])) or not math.isfinite(value):
            raise ValueError(f"algorithm.gigpo.{knob}={value} must be a finite number (a NaN or inf makes every "
                             f"advantage NaN)")
    threshold = gigpo.get("similarity_thresh", GIGPO_DEFAULTS["similarity_thresh"])
    if not _is_number(threshold) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"algorithm.gigpo.similarity_thresh={threshold} is not a similarity ratio: accepted are "
                         f"numbers in (0, 1]")
    if algorithm.adv_estimator == GIGPO and algorithm.get("use_kl_in_reward", False):
        raise ValueError("algorithm.use_kl_in_reward=True is not supported with GiGPO (its advantage is built from "
                         "environment rewards): set it to False and use the actor's KL loss "
                         "(actor_rollout_ref.actor.use_kl_loss=True)")
    cross_steps = algorithm.get(CROSS_STEPS, False)
    if not isinstance(cross_steps, bool):
        raise ValueError(f"algorithm.{CROSS_STEPS}={cross_steps} is not a boolean: accepted are True and False")
    if cross_steps and algorithm.adv_estimator not in (GIGPO, "grpo"):
        raise ValueError(f"algorithm.{CROSS_STEPS}=True applies to gigpo and grpo only, not to "
                         f"algorithm.adv_estimator={algorithm.adv_estimator} (verl's own stage counts each session "
                         "once)")
    if cross_steps and algorithm.get("use_kl_in_reward", False):
        raise ValueError(f"algorithm.{CROSS_STEPS}=True with algorithm.use_kl_in_reward=True is not supported: GRPO "
                         "over step samples scores the rewards as stored; use the actor's KL loss instead")
    correction = algorithm.get("rollout_correction") or {}
    if (algorithm.adv_estimator == GIGPO or cross_steps) and not correction.get("bypass_mode", False):
        for knob in ("rollout_is", "rollout_rs"):
            if correction.get(knob) is not None:
                raise ValueError(f"algorithm.rollout_correction.{knob}={correction.get(knob)} is not applied: verl "
                                 "computes its weights in its own advantage stage, which GiGPO (and GRPO with "
                                 f"algorithm.{CROSS_STEPS}=True) replace; leave it null or set "
                                 "algorithm.rollout_correction.bypass_mode=True")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_known_keys(section: Mapping, accepted: set[str], name: str) -> None:
    """Every key of `section` (the config section called `name`) is in `accepted`, where a dotted key "a.b"
    names a subkey and a plain key "a" whose subkeys are not listed accepts any of them."""
    unknown = _unknown_keys(section, accepted, "")
    if unknown:
        raise ValueError(f"unknown key(s) under {name}: {', '.join(f'{name}.{key}' for key in unknown)} (typos "
                         f"would be silently ignored); accepted are {sorted(accepted)}")


def _unknown_keys(section: Mapping, accepted: set[str], prefix: str) -> list[str]:
    unknown = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        if path not in accepted:
            unknown.append(path)
        elif isinstance(value, Mapping) and any(name.startswith(f"{path}.") for name in accepted):
            unknown += _unknown_keys(value, accepted, f"{path}.")
    return unknown


def accepted_env_keys(env_name: str) -> set[str]:
    """The keys `env.*` may hold for the registered environment `env_name`: the agent loop's plus the
    environment's knobs (`EnvSpec.knobs`); dotted keys name subkeys, as `check_known_keys` reads them."""
    return set(LOOP_ENV_KEYS | set(get_env(env_name).knobs))


def check_agent_loop_manager(agent: DictConfig, hf_config: PretrainedConfig) -> None:
    """Molmo2's trainer image inputs come from our agent-loop manager's workers (`multimodal.py`): verl's own
    decode the step's ids to text, which drops Molmo2's image blocks, and fail on the first image step."""
    name = agent.get("agent_loop_manager_class")
    if hf_config.model_type != Molmo2Config.model_type:
        return
    if not name or not issubclass(load_class_from_fqn(name, "AgentLoopManager"), AgentLoopManager):
        raise ValueError(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={name}: a Molmo2 model needs "
                         f"{AgentLoopManager.__module__}.{AgentLoopManager.__name__} (or a subclass), whose workers "
                         "give the trainer the rollout's images; verl's own cannot rebuild Molmo2's image inputs")


def check_group_size(config: DictConfig) -> None:
    n = config.actor_rollout_ref.rollout.n
    if config.algorithm.adv_estimator in (GIGPO, "grpo", "rloo") and n < 2:
        raise ValueError(f"algorithm.adv_estimator={config.algorithm.adv_estimator} compares the G trajectories "
                         f"of a group, but the group size actor_rollout_ref.rollout.n is {n}: set it to 2 or more")


def check_micro_batches(config: DictConfig) -> None:
    """Without dynamic batch sizes, each GPU's share of a batch splits into whole micro-batches, as verl's
    `prepare_micro_batches` asserts mid-run: an update's mini-batch (ppo_mini_batch_size x n step samples) over the
    data-parallel GPUs; the log-prob passes' batch, which verl pads to a multiple of lcm(GPUs, that mini-batch)."""
    actor = config.actor_rollout_ref.actor
    if actor.get("use_dynamic_bsz", False):
        return
    gpus = _training_gpus(config) // (actor.get("ulysses_sequence_parallel_size") or 1)
    mini_batch = actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n
    if mini_batch % gpus:
        raise ValueError(f"an update's mini-batch (actor_rollout_ref.actor.ppo_mini_batch_size "
                         f"{actor.ppo_mini_batch_size} x rollout.n {config.actor_rollout_ref.rollout.n} = "
                         f"{mini_batch} step samples) does not split evenly over the {gpus} data-parallel GPU(s)")
    log_prob_batch = math.lcm(gpus, mini_batch) // gpus
    per_gpu = {("actor", "ppo_micro_batch_size_per_gpu"): (mini_batch // gpus, "an update's mini-batch"),
               **{(role, "log_prob_micro_batch_size_per_gpu"): (log_prob_batch, "the log-prob passes' batch (at "
                                                                "its smallest)") for role in ("rollout", "ref")}}
    for (role, knob), (samples, what) in per_gpu.items():
        micro = config.actor_rollout_ref[role][knob]
        if micro and samples % micro:
            raise ValueError(
                f"actor_rollout_ref.{role}.{knob}={micro} does not divide the {samples} step samples each of the "
                f"{gpus} GPU(s) gets of {what} (actor.ppo_mini_batch_size {actor.ppo_mini_batch_size} x rollout.n "
                f"{config.actor_rollout_ref.rollout.n} = {mini_batch}): use a divisor of {samples}, or "
                f"actor_rollout_ref.actor.use_dynamic_bsz=True")


def check_environment(config: DictConfig) -> None:
    env = config.env
    check_known_keys(env, accepted_env_keys(env.env_name), "env")
    if env.max_steps < 1:
        raise ValueError(f"env.max_steps must be at least 1, got {env.max_steps}")
    if env.history_length < 0:
        raise ValueError(f"env.history_length must be 0 or more, got {env.history_length}")
    if env.reward_invalid_penalty < 0:
        raise ValueError(f"env.reward_invalid_penalty must be 0 or more (a penalty per invalid action), got "
                         f"{env.reward_invalid_penalty}")
    for knob in ("require_admissible", "serve_text_only"):  # read with bool(): the string "no" would be True
        if not isinstance(env.get(knob, False), bool):
            raise ValueError(f"env.{knob}={env[knob]} is not a boolean: accepted are True and False")
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
    """Every parquet file exists and has rows (the first row of each is started by `check_first_prompts`)."""
    paths = [files] if isinstance(files, str) else list(files)
    if not paths:
        raise ValueError(f"no game data found: {name} is empty")
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"no game data found: {name} names {path}, which does not exist (write it with the "
                             f"environment's data script, e.g. examples/data_preprocess/alfworld.py or sokoban.py)")
        if len(pd.read_parquet(path, columns=["extra_info"])) == 0:
            raise ValueError(f"no game data found: {path} ({name}) has no rows")


def first_row(path: str) -> dict:
    """The `extra_info` of the first row of a parquet file: the reset options of its episode."""
    return dict(pd.read_parquet(path, columns=["extra_info"])["extra_info"].iloc[0])


def check_first_prompts(config: DictConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """The first row of every data file starts an episode of the environment (a broken game is named here, not
    after Ray, the model and a rollout), and the train file's step-0 prompt (no history yet) fits
    `data.max_prompt_length`: longer, the agent loop would cut the task and the instructions off every prompt."""
    train = [config.data.train_files] if isinstance(config.data.train_files, str) else list(config.data.train_files)
    val = [config.data.val_files] if isinstance(config.data.val_files, str) else list(config.data.val_files)
    env_name = config.env.env_name
    spec, env = get_env(env_name), make_env(env_name, config.env.max_steps, **env_knobs(config.env))
    try:
        for path in dict.fromkeys(train + val):
            options = first_row(path)
            try:
                observation, info = env.reset(seed=options.get("seed"), options=options)
            except ValueError as error:
                raise ValueError(f"{path}: its first row does not start an episode of {env_name}: {error}") from None
            if path != train[0]:
                continue
            prompt_ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": spec.prompt(observation_text(observation), info, [], 0)}],
                tokenize=True, add_generation_prompt=True, return_dict=False,
                **config.data.get("apply_chat_template_kwargs", {}))
            if len(prompt_ids) > config.data.max_prompt_length:
                raise ValueError(
                    f"data.max_prompt_length={config.data.max_prompt_length} is shorter than the first prompt of "
                    f"{path} ({options}): the {env_name} step-0 prompt in the model's chat template takes "
                    f"{len(prompt_ids)} tokens; set data.max_prompt_length to at least that, with room for "
                    f"env.history_length={config.env.history_length} earlier steps")
    finally:
        env.close()


def check_response_length(max_response_length: int, tokenizer: PreTrainedTokenizerBase) -> None:
    """The shortest well-formed answer plus its end-of-sequence token must fit in the response."""
    needed = len(tokenizer.encode(SHORTEST_ANSWER, add_special_tokens=False)) + 1
    if max_response_length < needed:
        raise ValueError(f"data.max_response_length={max_response_length} is too short for the action format: "
                         f"'{SHORTEST_ANSWER}' and its end token take {needed} tokens with this tokenizer")


def local_model_dir(model_path: str) -> str | None:
    """The local directory of `actor_rollout_ref.model.path`: the directory itself, or a hub id's snapshot in
    the local hub cache; None for a hub id the hub has and the cache lacks (in part: transformers and vLLM
    download what is missing). Anything else is a ValueError that says how to point MODEL_PATH at a local
    checkpoint; a cached snapshot the hub cannot complete is returned for `check_weights` to say what it lacks."""
    if os.path.isdir(model_path):
        return model_path
    try:
        validate_repo_id(model_path)
    except HFValidationError:
        raise ValueError(f"actor_rollout_ref.model.path={model_path} is neither a local directory (nothing is "
                         f"there) nor a hub id (ORG/NAME): {_how_to_point_at_a_checkpoint('ORG/NAME')}") from None
    try:
        cached = snapshot_download(model_path, local_files_only=True)
    except FileNotFoundError:
        cached = None
    if cached is not None and _weights_complete(cached, model_path):
        return cached
    try:
        HfApi().model_info(model_path, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # offline, unreachable, unknown or private repo: each is a reason to say so
        if cached is not None:
            return cached
        raise ValueError(f"actor_rollout_ref.model.path={model_path} is neither a local directory nor reachable on "
                         f"the Hugging Face hub, and not in its local cache ({type(error).__name__}: "
                         f"{_first_line(error)}): {_how_to_point_at_a_checkpoint(model_path)}") from None
    return None


def _how_to_point_at_a_checkpoint(repo_id: str) -> str:
    return (f"point MODEL_PATH (actor_rollout_ref.model.path) at a local checkpoint directory, e.g. one made where "
            f"the hub is reachable with `hf download {repo_id} --local-dir DIR` and copied here")


def _weights_complete(model_dir: str, model_path: str) -> bool:
    try:
        check_weights(model_dir, model_path)
    except ValueError:
        return False
    return True


def check_weights(model_dir: str, model_path: str) -> None:
    """`model_dir` (the directory of `actor_rollout_ref.model.path`) holds weights, every shard its index names,
    and every safetensors file as long as its header says (a copy cut short otherwise fails in the workers)."""
    present = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(model_dir, name))]
    if not present:
        raise ValueError(f"actor_rollout_ref.model.path={model_path}: {model_dir} holds no weights (none of "
                         f"{list(WEIGHT_FILES)}): point it at a complete checkpoint")
    for index in (name for name in present if name.endswith(".index.json")):
        with open(os.path.join(model_dir, index), encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not os.path.isfile(os.path.join(model_dir, shard))]
        if missing:
            raise ValueError(f"actor_rollout_ref.model.path={model_path}: {index} names shard files that are not in "
                             f"{model_dir}: {missing}; copy the complete checkpoint")
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            check_safetensors_length(os.path.join(model_dir, name), model_path)


def check_safetensors_length(path: str, model_path: str) -> None:
    """The file at `path` is at least as long as its safetensors header says (8-byte header size, JSON header,
    then the tensors at the header's data offsets)."""
    size = os.path.getsize(path)
    problem = None
    with open(path, "rb") as f:
        head = f.read(8)
        header_size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if header_size is None or 8 + header_size > size:
            problem = "its header is cut short"
        else:
            try:
                header = json.loads(f.read(header_size))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, AttributeError, KeyError, IndexError, TypeError):  # not JSON, or not its layout
                problem = "its header is not a safetensors header"
            else:
                if 8 + header_size + end > size:
                    problem = f"its header says {8 + header_size + end} bytes"
    if problem:
        raise ValueError(f"actor_rollout_ref.model.path={model_path}: the weights file {path} is truncated or "
                         f"not safetensors ({size} bytes, {problem}); copy the complete checkpoint again")


def model_config(model_path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """transformers' config of `actor_rollout_ref.model.path`, or a ValueError saying it is not a model."""
    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"actor_rollout_ref.model.path={model_path} is not a model transformers can read: "
                         f"{_first_line(error)}") from None


def check_trainable_model(hf_config: PretrainedConfig, model_path: str) -> None:
    """verl picks a causal-LM or vision-LM class for the model (else a headless model it cannot train)."""
    if not hf_config.architectures:
        raise ValueError(f"actor_rollout_ref.model.path={model_path}: its config.json names no `architectures`, "
                         f"so verl cannot pick a model class; accepted are causal-LM and vision-LM checkpoints")
    if get_hf_auto_model_class(hf_config) not in TRAINABLE_MODEL_CLASSES:
        raise ValueError(f"actor_rollout_ref.model.path={model_path} is a {hf_config.architectures[0]} "
                         f"({hf_config.model_type}), which the trainer cannot build as a language model; accepted "
                         f"are checkpoints of {sorted({c.__name__ for c in TRAINABLE_MODEL_CLASSES})}")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def meta_model(hf_config: PretrainedConfig) -> torch.nn.Module:
    """The model verl will train, built on the meta device (shapes, no weights)."""
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
      actor (weights unless `param_offload`, the moments unless `optimizer_offload`); with a fixed KV cache
      (`engine_kwargs.vllm.kv_cache_memory_bytes`) vLLM's part is that cache and its bf16 weights' slice instead.
    Both phases: the reference model's weights in its `model_dtype` when the KL loss needs one and it stays on
    the GPU (`reference.py`: unless its `param_offload` or verl's forced offload, `MOLMO_AGENT_REF_ON_GPU=0`).
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
    ref = config.actor_rollout_ref.ref.fsdp_config
    ref_resident = actor.use_kl_loss and reference.reference_on_gpu() and not ref.param_offload
    ref_width = 4 if str(ref.model_dtype) in ("fp32", "float32") else 2
    ref_weights = ref_width * per_shard if ref_resident else 0.0
    need = {"update": weights * 2 + moments + (0 if fused else weights) + ref_weights}
    if config.actor_rollout_ref.get("hybrid_engine", True):  # vLLM on the training GPUs
        rollout = config.actor_rollout_ref.rollout
        kv_cache_bytes = (rollout.get("engine_kwargs") or {}).get("vllm", {}).get("kv_cache_memory_bytes")
        vllm = (kv_cache_bytes / 2**30 + 2 * num_params / rollout.tensor_model_parallel_size / 2**30
                if kv_cache_bytes else rollout.gpu_memory_utilization * gpu_gib)
        need["rollout"] = (vllm + (0 if fsdp.param_offload else weights) + (0 if fsdp.optimizer_offload else moments)
                           + ref_weights)
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
