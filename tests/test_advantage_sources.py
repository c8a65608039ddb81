"""The advantage mass that groups without a success carry, on a batch shaped like a weak policy's."""
import numpy as np
import pytest

from molmo_agent.algorithms.advantage_sources import advantage_sources


def test_a_group_that_all_failed_still_carries_mass_when_penalties_differ():
    # group "w": one of two trajectories won (advantages +1 on its 2 steps, -1 on the other's 2 steps);
    # group "f": both failed, one with an invalid action: std normalization gives them +-0.7 on 3 steps each
    group_ids = ["w"] * 4 + ["f"] * 6
    won = [False, True, False, False] + [False] * 6
    advantages = [1.0, 1.0, -1.0, -1.0] + [0.7] * 3 + [-0.7] * 3
    sources = advantage_sources(group_ids, won, advantages)
    assert sources["no_success_group_share"] == 0.5
    assert sources["no_success_abs_share"] == pytest.approx(4.2 / 8.2)
    assert sources["negative_abs_share"] == pytest.approx(4.1 / 8.2)
    assert sources["abs_mean"] == pytest.approx(0.82)


def test_zero_advantages_and_an_empty_batch_give_no_shares():
    assert advantage_sources(["g", "g"], [False, False], np.zeros(2))["no_success_abs_share"] == 0.0
    assert advantage_sources([], [], []) == {}


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="2 group ids, 1 won flags and 2 advantages"):
        advantage_sources(["g", "g"], [True], [0.5, -0.5])
