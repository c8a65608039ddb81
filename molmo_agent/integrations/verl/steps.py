"""Step samples: the extra fields the agent loop writes on each step, and what the trainer builds from them.

The agent loop returns one verl `AgentLoopOutput` per agent step; its `extra_fields` carry the keys below. The
trainer reads them back (one dict per sample) to build GiGPO's input and the environment metrics.
"""
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl.protocol import DataProto

from molmo_agent.algorithms.gigpo import anchor_group_share
from molmo_agent.envs.metrics import EpisodeRecord
from molmo_agent.envs.metrics import episode_metrics as env_episode_metrics

TRAJ_UID = "traj_uid"  # str: one session (episode); a group's G sessions share the dataset row's `uid`
STEP_INDEX = "step_index"  # int: 0-based step inside the episode
ANCHOR_OBS = "anchor_obs"  # str | bytes: the step's anchor state (`EnvSpec.anchor`), GiGPO's step groups
ENV_REWARD = "env_reward"  # float: the environment's reward for this step's action
IS_ACTION_VALID = "is_action_valid"  # bool: the response held a well-formed action (and one the environment
#                                       lists, with env.require_admissible or an environment that requires it)
IS_ACTION_ADMISSIBLE = "is_action_admissible"  # bool: the action was one the environment listed (True if none)
DONE = "done"  # bool: the episode ended at this step (won, lost or out of steps)
WON = "won"  # bool: the task was solved at this step
TASK_TYPE = "task_type"  # str: the game's task family, for success rates per type

STEP_FIELDS = (TRAJ_UID, STEP_INDEX, ANCHOR_OBS, ENV_REWARD, IS_ACTION_VALID, DONE, WON, TASK_TYPE)
GENERATE_SECONDS = "generate_seconds"  # float: wall seconds the session waited for this step's response
ENV_SECONDS = "env_seconds"  # float: wall seconds the session waited for the environment's answer to it
IMAGES = "images"  # int: images in the step's prompt (the observation's; 0 for a text environment)


def gigpo_batch(uids: Sequence[str], extra_fields: Sequence[dict[str, Any]], response_mask: torch.Tensor) -> DataProto:
    """GiGPO's input: `response_mask` (bs, response_length) plus the step fields as non-tensor arrays of (bs,)."""
    if len(uids) != len(extra_fields) or len(uids) != response_mask.shape[0]:
        raise ValueError(f"step samples disagree in number: {len(uids)} uids, {len(extra_fields)} extra fields, "
                         f"{response_mask.shape[0]} response masks")
    missing = [key for key in STEP_FIELDS if any(key not in fields for fields in extra_fields)]
    if missing:
        raise ValueError(f"step samples lack the agent loop's extra fields {missing}: is the agent loop "
                         f"`env_agent` (actor_rollout_ref.rollout.agent.default_agent_loop)?")

    def column(key: str, dtype=object) -> np.ndarray:
        values = np.empty(len(extra_fields), dtype=dtype)
        values[:] = [fields[key] for fields in extra_fields]
        return values

    non_tensors = {"uid": np.array(list(uids), dtype=object)}
    non_tensors.update({key: column(key) for key in (TRAJ_UID, ANCHOR_OBS, TASK_TYPE)})
    non_tensors[STEP_INDEX] = column(STEP_INDEX, np.int64)
    non_tensors[ENV_REWARD] = column(ENV_REWARD, np.float32)
    non_tensors[IS_ACTION_VALID] = column(IS_ACTION_VALID, bool)
    non_tensors[DONE] = column(DONE, bool)
    non_tensors[WON] = column(WON, bool)
    return DataProto.from_dict(tensors={"response_mask": response_mask}, non_tensors=non_tensors)


def episode_record(traj_steps: Sequence[dict[str, Any]]) -> EpisodeRecord:
    """The record of one trajectory from the extra fields of its step samples (any order)."""
    last = max(traj_steps, key=lambda fields: fields[STEP_INDEX])
    return EpisodeRecord(task_type=str(last[TASK_TYPE]), won=bool(last[WON]), length=last[STEP_INDEX] + 1,
                         invalid_actions=sum(not fields[IS_ACTION_VALID] for fields in traj_steps),
                         inadmissible_actions=sum(not fields[IS_ACTION_ADMISSIBLE] for fields in traj_steps))


def episode_records(extra_fields: Sequence[dict[str, Any]]) -> list[EpisodeRecord]:
    """One record per trajectory among the step samples."""
    by_traj: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for fields in extra_fields:
        by_traj[fields[TRAJ_UID]].append(fields)
    return [episode_record(traj_steps) for traj_steps in by_traj.values()]


def episode_metrics(uids: Sequence[str], extra_fields: Sequence[dict[str, Any]], expected_episodes: int,
                    prefix: str = "env") -> dict[str, float]:
    """The environment's episode metrics (success overall and per task type, episode length, invalid-action
    rate) over the step samples' trajectories; GiGPO's anchor-group share over the steps (`anchor_group_share`,
    exact anchors, logged for every estimator); the mean number of images in a step's prompt; and the share of the `expected_episodes` sessions that left no
    step sample — an environment that crashed or hung, whose episode the agent loop drops (the other metrics are
    over the episodes that were played)."""
    records = episode_records(extra_fields)
    metrics = {f"{prefix}/{name}": value for name, value in env_episode_metrics(records).items()}
    metrics[f"{prefix}/dropped_episode_rate"] = 1.0 - len(records) / expected_episodes
    metrics[f"{prefix}/anchor_group_share"] = anchor_group_share(uids, [fields[ANCHOR_OBS] for fields in extra_fields])
    images = [fields.get(IMAGES, 0) for fields in extra_fields]
    metrics[f"{prefix}/images_per_step"] = float(np.mean(images)) if images else 0.0
    return metrics


def longest_session_metrics(extra_fields: Sequence[dict[str, Any]],
                            response_lengths: Sequence[int]) -> dict[str, float]:
    """The session with the most generated tokens (its answers' lengths summed): those tokens and its steps. Each
    of its tokens is an engine step after the one before, so no overlap of sessions can end the rollout sooner
    than its decode steps take (bench/e2e.py's engine-bound estimate of the rollout)."""
    tokens: dict[str, int] = defaultdict(int)
    steps: dict[str, int] = defaultdict(int)
    for fields, length in zip(extra_fields, response_lengths, strict=True):
        tokens[fields[TRAJ_UID]] += int(length)
        steps[fields[TRAJ_UID]] += 1
    if not tokens:
        return {}
    longest = max(tokens, key=tokens.__getitem__)
    return {"rollout/longest_session_tokens": float(tokens[longest]),
            "rollout/longest_session_steps": float(steps[longest])}


def session_time_metrics(extra_fields: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Where a session's time goes: mean seconds per step waiting for generation and for the environment, and the
    environment's share of the two. Sessions run concurrently, so these are waits per session, not stage wall
    times (verl's timing_s/gen is the rollout's wall time)."""
    if not extra_fields:
        return {}
    generate = np.array([fields[GENERATE_SECONDS] for fields in extra_fields], dtype=np.float64)
    env = np.array([fields[ENV_SECONDS] for fields in extra_fields], dtype=np.float64)
    total = generate.sum() + env.sum()
    return {"agent/generate_seconds_per_step": float(generate.mean()),
            "agent/env_seconds_per_step": float(env.mean()),
            "agent/env_time_share": float(env.sum() / total) if total > 0 else 0.0}
