"""GiGPO's verl advantage stage on a hand-built DataProto, and the `gigpo` name in verl's estimator registry."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo import core_algos

from molmo_agent.integrations.verl.advantage import write_gigpo_advantages, register_estimators
from test_gigpo import HAND_CASE, HAND_KNOBS, HAND_MEAN_NORM

RESPONSE_LENGTHS = [3, 1, 4, 2, 4, 1, 2]  # per step sample, padded to 4


def hand_batch() -> DataProto:
    """HAND_CASE as the agent loop hands it to the trainer: one row per step sample, fields under verl's names."""
    mask = torch.tensor([[1] * n + [0] * (4 - n) for n in RESPONSE_LENGTHS], dtype=torch.int64)
    names = dict(uid="group_ids", traj_uid="traj_ids", step_index="step_ids", anchor_obs="anchors",
                 env_reward="env_rewards", is_action_valid="valid")
    non_tensors = {field: np.array(HAND_CASE[name], dtype=object) for field, name in names.items()}
    return DataProto.from_dict(tensors={"response_mask": mask}, non_tensors=non_tensors)


def algorithm_config(**gigpo):
    knobs = dict(step_advantage_w=HAND_KNOBS["step_advantage_w"], mode="mean_norm",
                 invalid_action_penalty_coef=HAND_KNOBS["invalid_penalty"], enable_similarity=False,
                 similarity_thresh=0.95)
    return OmegaConf.create({"gamma": HAND_KNOBS["gamma"], "adv_estimator": "gigpo", "gigpo": {**knobs, **gigpo}})


def test_advantages_land_on_each_step_samples_response_tokens():
    data = write_gigpo_advantages(hand_batch(), algorithm_config())
    mask = data.batch["response_mask"].float()
    expected = torch.tensor(HAND_MEAN_NORM["advantages"]).unsqueeze(-1) * mask
    torch.testing.assert_close(data.batch["advantages"], expected)
    torch.testing.assert_close(data.batch["returns"], expected)
    assert data.batch["advantages"].dtype == torch.float32


def test_cross_step_statistics_are_read_from_the_algorithm_section():
    config = algorithm_config(step_advantage_w=0.0)
    config.compute_mean_std_cross_steps = True
    cross_steps = write_gigpo_advantages(hand_batch(), config).batch["advantages"][:, 0]
    # HAND_CASE's g1 with its step samples counted: a +4.4, b -6.6 (test_gigpo's hand case); g2's x alone: 1
    torch.testing.assert_close(cross_steps, torch.tensor([4.4, 1.0, -6.6, 4.4, 1.0, 4.4, -6.6]))
    config.compute_mean_std_cross_steps = False
    torch.testing.assert_close(write_gigpo_advantages(hand_batch(), config).batch["advantages"][:, 0],
                               torch.tensor(HAND_MEAN_NORM["episode_advantages"]))


def test_metrics_for_the_trainer_log():
    metrics = write_gigpo_advantages(hand_batch(), algorithm_config()).meta_info["metrics"]
    assert not any("anchor" in name or "valid" in name for name in metrics)  # environment metrics, logged once
    assert metrics["gigpo/episode_return/mean"] == pytest.approx((10 - 1 + 1) / 3)  # each trajectory once
    assert (metrics["gigpo/episode_return/min"], metrics["gigpo/episode_return/max"]) == (-1.0, 10.0)


def test_attribute_style_config_reads_the_same_knobs():
    as_attributes = SimpleNamespace(gamma=HAND_KNOBS["gamma"], gigpo=SimpleNamespace(
        step_advantage_w=HAND_KNOBS["step_advantage_w"], mode="mean_norm",
        invalid_action_penalty_coef=HAND_KNOBS["invalid_penalty"], enable_similarity=False, similarity_thresh=0.9))
    from_attributes = write_gigpo_advantages(hand_batch(), as_attributes).batch["advantages"]
    torch.testing.assert_close(from_attributes, write_gigpo_advantages(hand_batch(), algorithm_config())
                               .batch["advantages"])


def test_missing_field_is_named():
    data = hand_batch()
    del data.non_tensor_batch["anchor_obs"]
    with pytest.raises(ValueError, match="missing: \\['anchor_obs'\\]"):
        write_gigpo_advantages(data, algorithm_config())


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="unknown mode 'std'"):
        write_gigpo_advantages(hand_batch(), algorithm_config(mode="std"))


def test_registry_entry_is_idempotent_and_points_to_our_trainer():
    register_estimators()
    register_estimators()
    estimator = core_algos.get_adv_estimator_fn("gigpo")
    with pytest.raises(RuntimeError, match="write_gigpo_advantages"):
        estimator(token_level_rewards=torch.zeros(1, 1), response_mask=torch.ones(1, 1), config=None)
