"""GiGPO advantages (Feng et al., 2025, "Group-in-Group Policy Optimization for LLM Agent Training").

The input is one entry per *step sample*: the agent's response at one step of one trajectory. The G trajectories
of a group play the same game from the same start. For step t of trajectory τ:

    r_t    = env_reward_t - c · (1 - valid_t)                 step reward (invalid-action penalty c)
    R(τ)   = Σ_t r_t                                          episode return
    A_E    = norm(R(τ)  over the trajectories of the group)   episode advantage, each trajectory counted once
             (compute_mean_std_cross_steps: over the group's step samples, each trajectory counted once per step)
    R_t    = r_t + γ · R_{t+1}                                 discounted step return
    A_S    = norm(R_t   over the anchor group of the step)     step advantage
    A      = A_E + ω · A_S

An anchor group is the set of steps of one group whose anchor observations are identical (or, optionally, similar
text). `norm` is `mean_norm` (x - mean) or `mean_std_norm` ((x - mean) / (std + 1e-6), unbiased std). A group of
one trajectory has mean 0 and std 1; an anchor group of one step has A_S = 0.

Counted once, trajectories share an episode advantage that sums to zero over the group, but each passes it to every
one of its steps: failures that run to the step limit then carry most of the group's step samples and push the
policy down harder than the shorter wins push it up. Counted per step (verl-agent's default), the mean is the
step-weighted one and the A_E of a group's step samples sum to zero.

Everything is vectorized over samples (sorting, np.unique, bincount segment sums) so that a batch of 10^5 steps
costs milliseconds; the only Python loops run over distinct values or over step positions.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

Mode = Literal["mean_norm", "mean_std_norm"]
MODES: tuple[str, ...] = ("mean_norm", "mean_std_norm")
EPSILON = 1e-6


@dataclass(frozen=True)
class GiGPOResult:
    """GiGPO outputs; per-sample arrays are in the input's sample order.

    advantages:         (N,) float32, A = A_E + ω·A_S
    episode_advantages: (N,) float32, A_E of the sample's trajectory
    step_advantages:    (N,) float32, A_S
    step_returns:       (N,) float32, R_t (penalty included)
    episode_returns:    (T,) float64, R(τ) of each of the T trajectories (each counted once)
    anchor_group_share: share of step samples whose anchor group has more than one member
    """

    advantages: np.ndarray
    episode_advantages: np.ndarray
    step_advantages: np.ndarray
    step_returns: np.ndarray
    episode_returns: np.ndarray
    anchor_group_share: float


def compute_gigpo_advantages(
    group_ids: Sequence[Any],
    traj_ids: Sequence[Any],
    step_ids: Sequence[int],
    anchors: Sequence[str | bytes],
    env_rewards: Sequence[float],
    valid: Sequence[bool],
    *,
    gamma: float,
    step_advantage_w: float,
    mode: Mode,
    invalid_penalty: float = 0.0,
    similarity_threshold: float | None = None,
    compute_mean_std_cross_steps: bool = False,
) -> GiGPOResult:
    """GiGPO advantages of N step samples.

    Args:
        group_ids: (N,) hashable group id of each sample (verl's `uid`).
        traj_ids: (N,) hashable trajectory id, unique within its group.
        step_ids: (N,) int step index inside the trajectory; orders the steps (gaps are allowed).
        anchors: (N,) the raw observation of the step, str (compared as text) or bytes (compared byte for byte).
        env_rewards: (N,) float environment reward of the step.
        valid: (N,) bool, whether the step's action was valid.
        gamma: discount γ of the step returns, in [0, 1].
        step_advantage_w: weight ω of the step advantage.
        mode: "mean_norm" or "mean_std_norm".
        invalid_penalty: c, subtracted from the reward of each invalid step (applied here and nowhere else).
        similarity_threshold: if set, text anchors of one group whose difflib ratio is >= it are linked, and
            anchor groups are the connected components (so independent of sample order); bytes stay exact.
        compute_mean_std_cross_steps: take A_E's group mean and std over the group's step samples (a trajectory
            weighs by its length) instead of over its trajectories.

    Returns:
        GiGPOResult.

    Raises:
        ValueError: naming the bad input (length mismatch, non-finite reward, bad validity flag, duplicate
            (group, trajectory, step), unknown mode, anchor neither str nor bytes, knob out of range).
    """
    n = _common_length(group_ids=group_ids, traj_ids=traj_ids, step_ids=step_ids, anchors=anchors,
                       env_rewards=env_rewards, valid=valid)
    _check_knobs(gamma, mode, invalid_penalty, similarity_threshold)
    rewards = step_rewards(env_rewards, valid, invalid_penalty)
    group = _factorize(group_ids, "group_ids")
    traj = _factorize(traj_ids, "traj_ids", sort=True)
    step = _step_indices(step_ids)

    # (group, trajectory, step) order, canonical inside each group (trajectory codes follow the sorted ids): every
    # sum runs over one group's samples in this order, so any permutation of the input gives bit-identical results.
    order = np.lexsort((step, traj, group))
    group, traj, step, rewards = group[order], traj[order], step[order], rewards[order]
    _check_unique_steps(group, traj, step, order, group_ids, traj_ids, step_ids)

    new_traj = np.ones(n, dtype=bool)
    new_traj[1:] = (group[1:] != group[:-1]) | (traj[1:] != traj[:-1])
    traj_index = np.cumsum(new_traj) - 1  # (N,) trajectory of each sample, 0..T-1
    traj_start = np.flatnonzero(new_traj)  # (T,)
    position = np.arange(n) - traj_start[traj_index]  # (N,) rank of the step inside its trajectory

    step_return = _discounted_returns(rewards, traj_index, position, len(traj_start), gamma)
    episode_return = np.bincount(traj_index, weights=rewards, minlength=len(traj_start))  # (T,)

    traj_group = group[traj_start]  # (T,)
    trajectories = np.bincount(traj_group)  # (groups,)
    if compute_mean_std_cross_steps:
        _, mean, std = _segment_stats(episode_return[traj_index], group)
    else:
        _, mean, std = _segment_stats(episode_return, traj_group)
    mean = np.where(trajectories > 1, mean, 0.0)  # a group of one trajectory: mean 0, std 1
    std = np.where(trajectories > 1, std, 1.0)
    episode_adv = _normalize(episode_return[traj_index], mean[group], std[group], mode)

    anchor_code = _factorize(anchors, "anchors", allowed=(str, bytes))[order]
    if similarity_threshold is not None:
        anchor_code = _merge_similar_anchors(group, anchor_code, anchors, order, similarity_threshold)
    anchor_group = _anchor_groups(group, anchor_code)
    count, mean, std = _segment_stats(step_return, anchor_group)
    # An anchor group of one step has mean = R_t exactly, so its A_S is exactly 0.
    step_adv = _normalize(step_return, mean[anchor_group], std[anchor_group], mode)

    def in_input_order(sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        out[order] = sorted_values
        return out

    return GiGPOResult(
        advantages=in_input_order(episode_adv + step_advantage_w * step_adv),
        episode_advantages=in_input_order(episode_adv),
        step_advantages=in_input_order(step_adv),
        step_returns=in_input_order(step_return),
        episode_returns=episode_return,
        anchor_group_share=_share_in_groups_of_several(anchor_group),
    )


def anchor_group_share(group_ids: Sequence[Any], anchors: Sequence[str | bytes]) -> float:
    """The share of N steps whose anchor group (same group id, identical anchor) has more than one member; near 0,
    GiGPO's step advantages vanish and it is GRPO in disguise. 0.0 for no steps."""
    _common_length(group_ids=group_ids, anchors=anchors)
    anchor_code = _factorize(anchors, "anchors", allowed=(str, bytes))
    return _share_in_groups_of_several(_anchor_groups(_factorize(group_ids, "group_ids"), anchor_code))


def _anchor_groups(group: np.ndarray, anchor_code: np.ndarray) -> np.ndarray:
    """(N,) index of each step's anchor group: one per (group, anchor) pair."""
    _, anchor_group = np.unique(_pair_key(group, anchor_code), return_inverse=True)
    return anchor_group


def _share_in_groups_of_several(anchor_group: np.ndarray) -> float:
    if len(anchor_group) == 0:
        return 0.0
    return float(np.mean(np.bincount(anchor_group)[anchor_group] > 1))


def step_rewards(env_rewards: Sequence[float], valid: Sequence[bool], invalid_penalty: float) -> np.ndarray:
    """r_t = env_reward_t - c·(1 - valid_t); (N,) float64. Raises ValueError on non-finite rewards or flags
    other than 0/1."""
    try:
        env = np.asarray(env_rewards, dtype=np.float64)
        ok = np.asarray(valid, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"env_rewards and valid must be numeric: {err}") from None
    if not np.all(np.isfinite(env)):
        raise ValueError(f"env_rewards must be finite; sample {int(np.flatnonzero(~np.isfinite(env))[0])} is not")
    if not np.all((ok == 0) | (ok == 1)):
        raise ValueError(f"valid must be booleans; sample {int(np.flatnonzero((ok != 0) & (ok != 1))[0])} is not")
    return env - invalid_penalty * (1.0 - ok)


def _discounted_returns(
    rewards: np.ndarray, traj_index: np.ndarray, position: np.ndarray, num_traj: int, gamma: float
) -> np.ndarray:
    """R_t = r_t + γ·R_{t+1} per trajectory; inputs (N,) in trajectory-then-step order, output (N,).

    The trajectories are laid out as rows of a zero-padded (T, L) matrix so that the recursion loops over the
    L step positions, not over samples, and is computed exactly as written (no γ^-t rescaling that underflows).
    """
    length = int(position.max()) + 1 if len(position) else 0
    r = np.zeros((num_traj, length + 1))
    r[traj_index, position] = rewards
    for t in range(length - 1, -1, -1):
        r[:, t] += gamma * r[:, t + 1]
    return r[traj_index, position]


def _segment_stats(x: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and unbiased std (torch.std's) of x inside each segment; a segment of one has std 1."""
    count = np.bincount(segment)
    mean = np.bincount(segment, weights=x) / np.maximum(count, 1)
    squares = np.bincount(segment, weights=(x - mean[segment]) ** 2, minlength=len(count))
    std = np.sqrt(squares / np.maximum(count - 1, 1))
    return count, mean, np.where(count > 1, std, 1.0)


def _normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, mode: str) -> np.ndarray:
    return x - mean if mode == "mean_norm" else (x - mean) / (std + EPSILON)


def _merge_similar_anchors(
    group: np.ndarray, anchor_code: np.ndarray, anchors: Sequence[Any], order: np.ndarray, threshold: float
) -> np.ndarray:
    """Relabel anchors so that linked text anchors of one group share a code: connected components of
    "difflib ratio >= threshold" among the group's distinct text anchors. Returns (N,) codes, sorted order."""
    _, first, inverse = np.unique(_pair_key(group, anchor_code), return_index=True, return_inverse=True)
    key_group = group[first]  # (K,) group of each distinct (group, anchor), ascending
    parent = list(range(len(first)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    texts = [anchors[order[i]] for i in first]  # one representative per (group, anchor)
    group_start = np.flatnonzero(np.r_[True, key_group[1:] != key_group[:-1]])
    for start, stop in zip(group_start, np.r_[group_start[1:], len(first)]):
        members = [k for k in range(start, stop) if isinstance(texts[k], str)]
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if root(a) != root(b) and _similar(texts[a], texts[b], threshold):
                    parent[root(b)] = root(a)
    roots = np.array([root(k) for k in range(len(parent))], dtype=np.int64)
    return roots[inverse]


def _pair_key(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """One int64 per (major, minor) pair of non-negative codes, ordered as the pairs."""
    return major * (int(minor.max(initial=0)) + 1) + minor


def _similar(a: str, b: str, threshold: float) -> bool:
    """difflib ratio >= threshold, with the cheap upper bounds first. The pair is put in a fixed order because
    SequenceMatcher's ratio is not symmetric in its arguments."""
    matcher = difflib.SequenceMatcher(None, *sorted((a, b)))
    return (matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold
            and matcher.ratio() >= threshold)


def _factorize(values: Sequence[Any], name: str, allowed: tuple[type, ...] | None = None,
               sort: bool = False) -> np.ndarray:
    """(N,) int64 codes of hashable values, numbered by first appearance or, with `sort`, in sorted order of the
    distinct values (then the codes do not depend on sample order). Loops in Python only over distinct values."""
    try:
        distinct = list(dict.fromkeys(values))
    except TypeError as err:
        raise ValueError(f"{name} must be hashable (str or bytes for anchors): {err}") from None
    if allowed is not None:
        bad = [v for v in distinct if not isinstance(v, allowed)]
        if bad:
            raise ValueError(f"{name} must be {' or '.join(t.__name__ for t in allowed)}, got {type(bad[0]).__name__}")
    if sort:
        try:
            distinct.sort(key=_sort_key)
        except TypeError as err:
            raise ValueError(f"{name} mixes values that cannot be ordered: {err}") from None
    code = {v: i for i, v in enumerate(distinct)}
    return np.fromiter(map(code.__getitem__, values), dtype=np.int64, count=len(values))


def _sort_key(value: Any) -> tuple[int, Any]:
    # str, bytes and numbers each compare among themselves only.
    return (0, value) if isinstance(value, str) else (1, value) if isinstance(value, bytes) else (2, value)


def _step_indices(step_ids: Sequence[int]) -> np.ndarray:
    steps = np.asarray(step_ids)
    try:
        as_int = steps.astype(np.int64)
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or not np.array_equal(as_int, steps):
        raise ValueError("step_ids must be integers")
    if len(as_int) and as_int.min() < 0:
        raise ValueError(f"step_ids must be >= 0, got {int(as_int.min())}")
    return as_int


def _check_unique_steps(
    group: np.ndarray, traj: np.ndarray, step: np.ndarray, order: np.ndarray,
    group_ids: Sequence[Any], traj_ids: Sequence[Any], step_ids: Sequence[int],
) -> None:
    """Sorted codes must not repeat a (group, trajectory, step); the error names the first repeat's raw ids."""
    same = (group[1:] == group[:-1]) & (traj[1:] == traj[:-1]) & (step[1:] == step[:-1])
    if np.any(same):
        i = order[int(np.flatnonzero(same)[0])]
        raise ValueError(f"duplicate (group, trajectory, step) = ({group_ids[i]!r}, {traj_ids[i]!r}, {step_ids[i]!r})")


def _common_length(**arrays: Sequence[Any]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch between inputs: {lengths}")
    return next(iter(lengths.values()))


def _check_knobs(gamma: float, mode: str, invalid_penalty: float, similarity_threshold: float | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not np.isfinite(invalid_penalty):
        raise ValueError(f"invalid_penalty must be finite, got {invalid_penalty}")
    if similarity_threshold is not None and not 0.0 < similarity_threshold <= 1.0:
        raise ValueError(f"similarity_threshold must be in (0, 1], got {similarity_threshold}")
