"""GiGPO advantages: hand-computed cases, input errors, and properties against the per-sample reference."""
import difflib
import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_agent.algorithms.gigpo import anchor_group_share, compute_gigpo_advantages
from test_gigpo_reference import gigpo_reference

IMPLEMENTATIONS = pytest.mark.parametrize("gigpo", [compute_gigpo_advantages, gigpo_reference],
                                          ids=["vectorized", "reference"])
FIELDS = ("advantages", "episode_advantages", "step_advantages", "step_returns")

# Two groups. In g1, trajectory a (3 steps) wins at its last step; trajectory b (2 steps) reaches the kitchen one
# step earlier, by an invalid action. g2 holds a single trajectory, so its group and anchor groups are singletons.
# The samples are listed out of order on purpose.
#   r:    a = [0, 0, 10]   b = [0, -1] (penalty 1)   x = [0, 1]
#   R(τ): a = 10, b = -1 (g1 mean 4.5), x = 1 (alone: mean 0)
#   R_t (γ = 0.5): a = [2.5, 5, 10]   b = [-0.5, -1]   x = [0.5, 1]
#   anchor groups: g1/start {a0 2.5, b0 -0.5}, g1/kitchen {a2 10, b1 -1}; g1/hall, g2/start, g2/hall singletons
HAND_CASE = dict(
    group_ids=["g1", "g2", "g1", "g1", "g2", "g1", "g1"],
    traj_ids=["a", "x", "b", "a", "x", "a", "b"],
    step_ids=[2, 1, 0, 0, 0, 1, 1],
    anchors=["kitchen", "hall", "start", "start", "start", "hall", "kitchen"],
    env_rewards=[10.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    valid=[True, True, True, True, True, True, False],
)
HAND_KNOBS = dict(gamma=0.5, step_advantage_w=2.0, invalid_penalty=1.0)
HAND_STEP_RETURNS = [10.0, 1.0, -0.5, 2.5, 0.5, 5.0, -1.0]
HAND_MEAN_NORM = dict(  # per sample, in HAND_CASE's order
    episode_advantages=[5.5, 1.0, -5.5, 5.5, 1.0, 5.5, -5.5],
    step_advantages=[5.5, 0.0, -1.5, 1.5, 0.0, 0.0, -5.5],
    advantages=[16.5, 1.0, -8.5, 8.5, 1.0, 5.5, -16.5],
)
HAND_ANCHOR_GROUP_SHARE = 4 / 7


@IMPLEMENTATIONS
def test_hand_computed_mean_norm(gigpo):
    result = gigpo(**HAND_CASE, **HAND_KNOBS, mode="mean_norm")
    for name, expected in HAND_MEAN_NORM.items():
        np.testing.assert_allclose(getattr(result, name), expected, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(result.step_returns, HAND_STEP_RETURNS, rtol=1e-6)
    np.testing.assert_allclose(np.sort(result.episode_returns), [-1.0, 1.0, 10.0])
    assert result.anchor_group_share == pytest.approx(HAND_ANCHOR_GROUP_SHARE)
    assert result.advantages.dtype == np.float32


def test_anchor_group_share_is_the_one_gigpo_reports():
    assert anchor_group_share(HAND_CASE["group_ids"], HAND_CASE["anchors"]) == pytest.approx(HAND_ANCHOR_GROUP_SHARE)
    assert anchor_group_share(["g", "g", "h"], [b"x", b"x", b"x"]) == pytest.approx(2 / 3)  # per group, bytes too
    assert anchor_group_share([], []) == 0.0
    with pytest.raises(ValueError, match="length mismatch"):
        anchor_group_share(["g"], [])


@IMPLEMENTATIONS
def test_hand_computed_mean_std_norm(gigpo):
    # Every two-member group is {m + d, m - d}: unbiased std d·√2, so its members normalize to ±1/√2.
    result = gigpo(**HAND_CASE, **HAND_KNOBS, mode="mean_std_norm")
    h = 1 / math.sqrt(2)
    episode = [h, 1.0, -h, h, 1.0, h, -h]  # x: (1 - 0) / (1 + 1e-6)
    step = [h, 0.0, -h, h, 0.0, 0.0, -h]
    np.testing.assert_allclose(result.episode_advantages, episode, rtol=1e-5)
    np.testing.assert_allclose(result.step_advantages, step, rtol=1e-5)
    np.testing.assert_allclose(result.advantages, np.add(episode, np.multiply(2.0, step)), rtol=1e-5)


@IMPLEMENTATIONS
def test_cross_step_statistics_weigh_each_trajectory_by_its_steps(gigpo):
    # g1's step samples hold a's return 10 three times and b's -1 twice: mean 5.6, not the trajectories' 4.5, so a
    # gets +4.4 and b -6.6 on each step, which sum to zero over g1's five samples. g2's lone trajectory keeps
    # mean 0; step advantages do not change.
    result = gigpo(**HAND_CASE, **HAND_KNOBS, mode="mean_norm", compute_mean_std_cross_steps=True)
    episode = [4.4, 1.0, -6.6, 4.4, 1.0, 4.4, -6.6]
    np.testing.assert_allclose(result.episode_advantages, episode, rtol=1e-6)
    np.testing.assert_allclose(result.step_advantages, HAND_MEAN_NORM["step_advantages"], rtol=1e-6)
    g1 = [i for i, group in enumerate(HAND_CASE["group_ids"]) if group == "g1"]
    assert result.episode_advantages[g1].sum() == pytest.approx(0.0, abs=1e-5)
    # mean_std_norm: the unbiased std of g1's five samples is sqrt((3·4.4² + 2·6.6²) / 4) ≈ 6.02
    std = math.sqrt((3 * 4.4 ** 2 + 2 * 6.6 ** 2) / 4)
    result = gigpo(**HAND_CASE, **HAND_KNOBS, mode="mean_std_norm", compute_mean_std_cross_steps=True)
    np.testing.assert_allclose(result.episode_advantages,
                               [4.4 / std, 1.0, -6.6 / std, 4.4 / std, 1.0, 4.4 / std, -6.6 / std], rtol=1e-5)


@IMPLEMENTATIONS
def test_a_penalty_under_std_normalization_rewards_the_failures_of_a_group_without_a_win(gigpo):
    # Four failed episodes of three steps; the first made one invalid action. The std of the group's returns is
    # the penalty's alone, so normalizing by it gives the three other failures +0.5 at every step and the first
    # -1.5: advantages as large as a group's with one win in four, for a difference of one invalid action. Without
    # a penalty a group without a win has none (the learning recipe's default penalty is 0).
    def failed_group(penalty: float):
        episodes = [(e, k) for e in "abcd" for k in range(3)]
        return gigpo(group_ids=["g"] * 12, traj_ids=[e for e, _ in episodes], step_ids=[k for _, k in episodes],
                     anchors=[f"{e}{k}" for e, k in episodes], env_rewards=[0.0] * 12,
                     valid=[(e, k) != ("a", 1) for e, k in episodes], gamma=0.9, step_advantage_w=1.0,
                     mode="mean_std_norm", invalid_penalty=penalty).episode_advantages
    won_one = gigpo(group_ids=["g"] * 4, traj_ids=list("abcd"), step_ids=[0] * 4, anchors=list("abcd"),
                    env_rewards=[10.0, 0.0, 0.0, 0.0], valid=[True] * 4, gamma=0.9, step_advantage_w=1.0,
                    mode="mean_std_norm").episode_advantages
    penalized = failed_group(0.1)
    np.testing.assert_allclose(penalized[3:], 0.5, rtol=1e-4)  # (0 - (-0.025)) / (0.1 / 2)
    np.testing.assert_allclose(penalized[:3], -1.5, rtol=1e-4)
    np.testing.assert_allclose(won_one, [1.5, -0.5, -0.5, -0.5], rtol=1e-4)
    np.testing.assert_array_equal(failed_group(0.0), 0.0)


@IMPLEMENTATIONS
def test_similar_text_anchors_group_by_connected_components_in_any_order(gigpo):
    # a~b and b~c at 0.85 but not a~c: one component. verl-agent's greedy clustering splits it in some orders.
    a, b, c = "aaaaaaaaaa", "aaaaaaaaab", "aaaaaaaabb"
    assert difflib.SequenceMatcher(None, a, c).ratio() < 0.85 <= difflib.SequenceMatcher(None, a, b).ratio()
    for anchors in itertools.permutations([a, b, c, "zzzzzzzzzz"]):
        result = gigpo(["g"] * 4, [0, 1, 2, 3], [0] * 4, list(anchors), [1.0, 2.0, 3.0, 4.0], [True] * 4,
                       gamma=1.0, step_advantage_w=1.0, mode="mean_norm", similarity_threshold=0.85)
        assert result.anchor_group_share == pytest.approx(3 / 4)
        linked = [i for i, anchor in enumerate(anchors) if anchor != "zzzzzzzzzz"]
        assert sum(result.step_advantages[linked]) == pytest.approx(0.0, abs=1e-6)
        assert result.step_advantages[anchors.index("zzzzzzzzzz")] == 0.0


@IMPLEMENTATIONS
def test_bytes_anchors_compare_exactly(gigpo):
    # Trailing NUL bytes matter (numpy's fixed-width bytes would drop them), and text never equals bytes.
    anchors = [b"\x00", b"\x00\x00", b"\x00", "\x00"]
    result = gigpo(["g"] * 4, [0, 1, 2, 3], [0] * 4, anchors, [1.0, 2.0, 3.0, 4.0], [True] * 4,
                   gamma=1.0, step_advantage_w=1.0, mode="mean_norm", similarity_threshold=0.5)
    np.testing.assert_allclose(result.step_advantages, [-1.0, 0.0, 1.0, 0.0])


BAD_INPUTS = [
    ("length mismatch", dict(env_rewards=[0.0] * 6)),
    ("env_rewards must be finite", dict(env_rewards=[0.0] * 6 + [float("nan")])),
    ("valid must be booleans", dict(valid=[True] * 6 + [2])),
    ("duplicate .*'g1', 'a', 0", dict(step_ids=[2, 1, 0, 0, 0, 0, 1])),
    ("anchors must be str or bytes", dict(anchors=["start"] * 6 + [None])),
    ("anchors must be hashable", dict(anchors=["start"] * 6 + [["list"]])),
    ("step_ids must be integers", dict(step_ids=[2, 1, 0, 0, 0, 1, 1.5])),
    ("step_ids must be >= 0", dict(step_ids=[2, 1, 0, 0, 0, 1, -1])),
]


@pytest.mark.parametrize(("message", "change"), BAD_INPUTS, ids=[m for m, _ in BAD_INPUTS])
def test_bad_input_raises_one_value_error_naming_it(message, change):
    with pytest.raises(ValueError, match=message):
        compute_gigpo_advantages(**{**HAND_CASE, **change}, **HAND_KNOBS, mode="mean_norm")


@pytest.mark.parametrize(("message", "knobs"), [
    ("unknown mode 'std_norm'", dict(mode="std_norm")),
    ("gamma must be in", dict(mode="mean_norm", gamma=1.5)),
    ("similarity_threshold must be in", dict(mode="mean_norm", similarity_threshold=0.0)),
])
def test_bad_knob_raises_value_error_naming_it(message, knobs):
    with pytest.raises(ValueError, match=message):
        compute_gigpo_advantages(**HAND_CASE, **{**HAND_KNOBS, **knobs})


@st.composite
def batches(draw):
    """Groups of 1–4 trajectories of 1–6 steps; anchors from a small pool so that anchor groups form."""
    pool = ["room 1", "room 2", "room 3", b"\x89PNG frame"]
    columns = defaultdict(list)
    for group in range(draw(st.integers(1, 3))):
        for traj in range(draw(st.integers(1, 4))):
            for step in range(draw(st.integers(1, 6))):
                columns["group_ids"].append(f"uid-{group}")
                columns["traj_ids"].append(traj)
                columns["step_ids"].append(step)
                columns["anchors"].append(draw(st.sampled_from(pool)))
                columns["env_rewards"].append(draw(st.sampled_from([0.0, 0.0, 1.0, 10.0, -2.5])))
                columns["valid"].append(draw(st.booleans()))
    knobs = dict(gamma=draw(st.sampled_from([0.0, 0.5, 0.95, 1.0])), step_advantage_w=draw(st.floats(0.0, 3.0)),
                 mode=draw(st.sampled_from(["mean_norm", "mean_std_norm"])),
                 invalid_penalty=draw(st.sampled_from([0.0, 0.1, 1.0])),
                 compute_mean_std_cross_steps=draw(st.booleans()))
    return dict(columns), knobs


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@PROPERTY_SETTINGS
@given(batches(), st.randoms(use_true_random=False))
def test_any_permutation_gives_the_same_advantages(batch, rnd):
    columns, knobs = batch
    permutation = list(range(len(columns["group_ids"])))
    rnd.shuffle(permutation)
    shuffled = {name: [values[i] for i in permutation] for name, values in columns.items()}
    original = compute_gigpo_advantages(**columns, **knobs)
    permuted = compute_gigpo_advantages(**shuffled, **knobs)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(permuted, name), getattr(original, name)[permutation], err_msg=name)
    assert permuted.anchor_group_share == original.anchor_group_share


@PROPERTY_SETTINGS
@given(batches())
def test_matches_the_reference_and_stays_finite(batch):
    columns, knobs = batch
    got = compute_gigpo_advantages(**columns, **knobs)
    expected = gigpo_reference(**columns, **knobs)
    for name in FIELDS:
        assert np.all(np.isfinite(getattr(got, name))), name
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-5, err_msg=name)
    assert got.anchor_group_share == pytest.approx(expected.anchor_group_share)


@PROPERTY_SETTINGS
@given(batches())
def test_zero_step_weight_gives_the_episode_advantage_alone(batch):
    columns, knobs = batch
    with_steps = compute_gigpo_advantages(**columns, **{**knobs, "step_advantage_w": 1.0})
    episode_only = compute_gigpo_advantages(**columns, **{**knobs, "step_advantage_w": 0.0})
    np.testing.assert_array_equal(episode_only.advantages, with_steps.episode_advantages)


@PROPERTY_SETTINGS
@given(batches())
def test_step_advantages_have_zero_mean_in_every_anchor_group(batch):
    columns, knobs = batch
    result = compute_gigpo_advantages(**columns, **knobs)
    members = defaultdict(list)
    for i, key in enumerate(zip(columns["group_ids"], columns["anchors"])):
        members[key].append(i)
    for samples in members.values():
        assert np.mean(result.step_advantages[samples]) == pytest.approx(0.0, abs=1e-4)


@PROPERTY_SETTINGS
@given(batches())
def test_cross_step_episode_advantages_sum_to_zero_over_each_groups_steps(batch):
    columns, knobs = batch
    result = compute_gigpo_advantages(**columns, **{**knobs, "compute_mean_std_cross_steps": True})
    samples, trajectories = defaultdict(list), defaultdict(set)
    for i, (group, traj) in enumerate(zip(columns["group_ids"], columns["traj_ids"])):
        samples[group].append(i)
        trajectories[group].add(traj)
    for group, members in samples.items():
        if len(trajectories[group]) > 1:  # a lone trajectory keeps mean 0: its A_E is its return (over std 1)
            assert result.episode_advantages[members].sum() == pytest.approx(0.0, abs=1e-3)


def test_empty_batch_gives_empty_outputs():
    result = compute_gigpo_advantages([], [], [], [], [], [], gamma=1.0, step_advantage_w=1.0, mode="mean_norm")
    assert result.advantages.shape == (0,) and result.anchor_group_share == 0.0
