"""Episode metrics: success overall and per task type, length, invalid- and inadmissible-action rates."""
import pytest

from molmo_agent.envs.metrics import (
    EpisodeRecord,
    episode_metrics,
    inadmissible_action_rate,
    invalid_action_rate,
    mean_episode_length,
    success_rate,
    success_rate_by_task_type,
)

RECORDS = [
    EpisodeRecord("pick_and_place_simple", won=True, length=6, invalid_actions=0),
    EpisodeRecord("pick_and_place_simple", won=False, length=50, invalid_actions=10, inadmissible_actions=30),
    EpisodeRecord("look_at_obj_in_light", won=True, length=4, invalid_actions=2, inadmissible_actions=3),
    EpisodeRecord("look_at_obj_in_light", won=False, length=0),
]


def test_rates():
    assert success_rate(RECORDS) == 0.5
    assert success_rate_by_task_type(RECORDS) == {"look_at_obj_in_light": 0.5, "pick_and_place_simple": 0.5}
    assert mean_episode_length(RECORDS) == 15.0
    assert invalid_action_rate(RECORDS) == pytest.approx(12 / 60)
    assert inadmissible_action_rate(RECORDS) == pytest.approx(33 / 60)


def test_flat_dict_and_empty_input():
    metrics = episode_metrics(RECORDS)
    assert metrics["success_rate/pick_and_place_simple"] == 0.5 and metrics["episode_length"] == 15.0
    assert metrics["inadmissible_action_rate"] == pytest.approx(33 / 60)
    assert episode_metrics([]) == {"success_rate": 0.0, "episode_length": 0.0, "invalid_action_rate": 0.0,
                                   "inadmissible_action_rate": 0.0}
