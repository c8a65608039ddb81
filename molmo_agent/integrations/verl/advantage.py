"""GiGPO in verl: the advantage stage on a batch of step samples, and the estimator name in verl's registry.

verl's estimator registry calls an estimator with token rewards, the response mask and the group index only, but
GiGPO needs each step's trajectory, step index, anchor observation, reward and action validity. So molmo_agent's
trainer calls `write_gigpo_advantages` itself, and the name `gigpo` is registered only so that configs naming it
validate and a trainer without that stage fails with a clear message.
"""
from __future__ import annotations

from typing import Any

import torch
from verl import DataProto
from verl.trainer.ppo import core_algos

from molmo_agent.algorithms.gigpo import compute_gigpo_advantages
from molmo_agent.integrations.verl.steps import ANCHOR_OBS, ENV_REWARD, IS_ACTION_VALID, STEP_INDEX, TRAJ_UID

GIGPO = "gigpo"

# One entry per step sample in `non_tensor_batch`, as the agent loop writes them; `uid` is verl's group id.
GIGPO_FIELDS = ("uid", TRAJ_UID, STEP_INDEX, ANCHOR_OBS, ENV_REWARD, IS_ACTION_VALID)

# `algorithm.compute_mean_std_cross_steps` (verl-agent's name; its default is True, ours False): episode
# advantages normalized over a group's step samples rather than its trajectories, for GiGPO and GRPO alike.
CROSS_STEPS = "compute_mean_std_cross_steps"

# Knobs under `algorithm.gigpo`, with verl-agent's names and defaults.
DEFAULTS = {
    "step_advantage_w": 1.0,
    "mode": "mean_norm",
    "invalid_action_penalty_coef": 0.1,
    "enable_similarity": False,
    "similarity_thresh": 0.95,
}


def write_gigpo_advantages(data: DataProto, config: Any) -> DataProto:
    """Write GiGPO `advantages` and `returns` (B, response_length) on the response tokens of each step sample.

    Args:
        data: B step samples; `batch["response_mask"]` (B, response_length) and the GIGPO_FIELDS in
            `non_tensor_batch`, each a (B,) numpy object array.
        config: the algorithm config, as verl's `compute_advantage` receives it (`config.algorithm`): `gamma` and
            the `gigpo` knobs (`step_advantage_w`, `mode`, `invalid_action_penalty_coef`, `enable_similarity`,
            `similarity_thresh`), and CROSS_STEPS; a DictConfig, a dict or an object with attributes.

    Returns:
        `data`, with `returns` equal to `advantages` (as verl's GRPO does: no critic learns from them) and, in
        `meta_info["metrics"]`, episode-return statistics (penalty included; the anchor-group share and the
        invalid-action rate are environment metrics, `steps.episode_metrics`).
    """
    missing = [name for name in GIGPO_FIELDS if name not in data.non_tensor_batch]
    if data.batch is None or "response_mask" not in data.batch.keys():
        missing.append("response_mask")
    if missing:
        raise ValueError(f"GiGPO needs these fields in the batch, missing: {missing}")
    knobs = gigpo_knobs(config)
    fields = data.non_tensor_batch
    try:
        result = compute_gigpo_advantages(
            group_ids=fields["uid"],
            traj_ids=fields[TRAJ_UID],
            step_ids=fields[STEP_INDEX],
            anchors=fields[ANCHOR_OBS],
            env_rewards=fields[ENV_REWARD],
            valid=fields[IS_ACTION_VALID],
            gamma=knobs["gamma"],
            step_advantage_w=knobs["step_advantage_w"],
            mode=knobs["mode"],
            invalid_penalty=knobs["invalid_action_penalty_coef"],
            similarity_threshold=knobs["similarity_thresh"] if knobs["enable_similarity"] else None,
            compute_mean_std_cross_steps=knobs[CROSS_STEPS],
        )
    except ValueError as err:
        raise ValueError(f"bad GiGPO batch: {err} (group_ids is uid, traj_ids traj_uid, step_ids step_index, "
                         "anchors anchor_obs, env_rewards env_reward, valid is_action_valid)") from None
    mask = data.batch["response_mask"]
    advantages = torch.as_tensor(result.advantages, device=mask.device).unsqueeze(-1) * mask
    data.batch["advantages"] = advantages
    data.batch["returns"] = advantages.clone()

    episode_returns = result.episode_returns
    data.meta_info.setdefault("metrics", {}).update({
        "gigpo/episode_return/mean": float(episode_returns.mean()),
        "gigpo/episode_return/std": float(episode_returns.std()),
        "gigpo/episode_return/min": float(episode_returns.min()),
        "gigpo/episode_return/max": float(episode_returns.max()),
    })
    return data


def gigpo_knobs(config: Any) -> dict[str, Any]:
    """`gamma`, CROSS_STEPS and the `gigpo` knobs of an algorithm config, with verl-agent's defaults for absent
    `gigpo` ones (CROSS_STEPS: False)."""
    section = _get(config, "gigpo", None) or {}
    knobs = {name: _get(section, name, default) for name, default in DEFAULTS.items()}
    knobs["gamma"] = float(_get(config, "gamma", 1.0))
    knobs[CROSS_STEPS] = bool(_get(config, CROSS_STEPS, False))
    return knobs


def register_estimators() -> None:
    """Register `gigpo` in verl's advantage-estimator registry (idempotent: the same function each time)."""
    core_algos.register_adv_est(GIGPO)(_gigpo_needs_molmo_agent_trainer)


def _gigpo_needs_molmo_agent_trainer(**_: Any) -> None:
    raise RuntimeError(
        "algorithm.adv_estimator=gigpo needs molmo_agent's trainer: verl's advantage-estimator registry passes an "
        "estimator only token rewards, the response mask and the group index, while GiGPO needs every step's "
        f"{', '.join(GIGPO_FIELDS)}. molmo_agent's advantage stage calls "
        "molmo_agent.integrations.verl.advantage.write_gigpo_advantages(data, config.algorithm) instead."
    )


def _get(config: Any, name: str, default: Any) -> Any:
    # DictConfig, dict and verl's BaseConfig dataclasses have .get; other objects expose attributes.
    return config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)
