"""The straightforward GiGPO: one Python loop per sample, written straight from the definitions.

It is the oracle of tests/test_gigpo.py and the baseline of bench/gigpo.py (which imports it from here, so there
is one copy). It holds no tests itself; the hand-computed cases in test_gigpo.py check it as well.
"""
from __future__ import annotations

import difflib
import math
from collections import defaultdict

import numpy as np

from molmo_agent.algorithms.gigpo import EPSILON, GiGPOResult


def gigpo_reference(group_ids, traj_ids, step_ids, anchors, env_rewards, valid, *, gamma, step_advantage_w, mode,
                    invalid_penalty=0.0, similarity_threshold=None,
                    compute_mean_std_cross_steps=False) -> GiGPOResult:
    """Same contract as molmo_agent.algorithms.gigpo.compute_gigpo_advantages (valid inputs only)."""
    n = len(group_ids)
    reward = [float(env_rewards[i]) - invalid_penalty * (1.0 - float(valid[i])) for i in range(n)]

    steps_of_traj = defaultdict(list)  # (group, traj) -> sample indices
    for i in range(n):
        steps_of_traj[(group_ids[i], traj_ids[i])].append(i)

    step_return = [0.0] * n
    episode_return = {}
    for key, samples in steps_of_traj.items():
        samples.sort(key=lambda i: step_ids[i])
        running = 0.0
        for i in reversed(samples):
            running = reward[i] + gamma * running
            step_return[i] = running
        episode_return[key] = sum(reward[i] for i in samples)

    def stats(values, singleton_mean):
        """Mean and unbiased std of a group, computed once per group; a group of one: singleton_mean, std 1."""
        if len(values) == 1:
            return singleton_mean, 1.0
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def normalize(x, mean, std):
        return x - mean if mode == "mean_norm" else (x - mean) / (std + EPSILON)

    returns_of_group = defaultdict(list)  # per trajectory, or per step sample with compute_mean_std_cross_steps
    trajectories_of_group = defaultdict(int)
    for (group, traj), ret in episode_return.items():
        trajectories_of_group[group] += 1
        returns_of_group[group] += [ret] * (len(steps_of_traj[(group, traj)]) if compute_mean_std_cross_steps else 1)
    group_stats = {group: stats(returns, 0.0) if trajectories_of_group[group] > 1 else (0.0, 1.0)
                   for group, returns in returns_of_group.items()}
    episode_adv = [normalize(episode_return[(group_ids[i], traj_ids[i])], *group_stats[group_ids[i]])
                   for i in range(n)]

    anchor_group = _anchor_groups(group_ids, anchors, similarity_threshold)
    members = defaultdict(list)
    for i in range(n):
        members[anchor_group[i]].append(i)
    step_adv = [0.0] * n
    for samples in members.values():
        if len(samples) > 1:
            mean, std = stats([step_return[j] for j in samples], None)
            for i in samples:
                step_adv[i] = normalize(step_return[i], mean, std)

    def as_array(values):
        return np.array(values, dtype=np.float32).reshape(n)

    return GiGPOResult(
        advantages=as_array([episode_adv[i] + step_advantage_w * step_adv[i] for i in range(n)]),
        episode_advantages=as_array(episode_adv),
        step_advantages=as_array(step_adv),
        step_returns=as_array(step_return),
        episode_returns=np.array(sorted(episode_return.values())),
        anchor_group_share=sum(len(members[anchor_group[i]]) > 1 for i in range(n)) / n if n else 0.0,
    )


def _anchor_groups(group_ids, anchors, similarity_threshold):
    """Anchor-group label per sample: identical anchors of one group share a label; with a threshold, so do the
    connected components of similar text anchors (union-find over all pairs of a group's distinct anchors)."""
    label = {}  # (group, anchor) -> label
    first_of = [label.setdefault((group_ids[i], anchors[i]), i) for i in range(len(anchors))]
    parent = {i: i for i in label.values()}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    if similarity_threshold is not None:
        distinct = list(label.items())
        for x, ((group_a, a), i) in enumerate(distinct):
            for (group_b, b), j in distinct[x + 1:]:
                if (group_a == group_b and isinstance(a, str) and isinstance(b, str)
                        and difflib.SequenceMatcher(None, *sorted((a, b))).ratio() >= similarity_threshold):
                    parent[root(j)] = root(i)
    return [root(i) for i in first_of]
