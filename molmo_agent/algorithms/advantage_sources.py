"""Where an update's weight comes from: how much of the advantage mass groups without a success carry.

With a sparse success reward and a small invalid-action penalty, the G trajectories of a game that all failed
still differ in return when their penalties differ, and a std-normalized estimator scales those differences to
the size a success gets (for G = 8, one trajectory set apart by a single invalid action gets -7/√8 ≈ -2.47 and
the seven others +0.35 on every step). These shares tell, for any estimator, how much of an iteration's
policy-gradient weight Σ|A| such groups hold and how much of it pushes probabilities down.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def advantage_sources(group_ids: Sequence[Any], won: Sequence[bool], advantages: Sequence[float]) -> dict[str, float]:
    """Shares of the advantage mass of N step samples.

    Args:
        group_ids: (N,) the sample's group (verl's `uid`: one game, G trajectories).
        won: (N,) whether the sample's step won its episode (true on a won episode's last step).
        advantages: (N,) the sample's advantage (the value on each of its response tokens).

    Returns:
        `no_success_group_share`: groups none of whose trajectories won, over all groups;
        `no_success_abs_share`: Σ|A| of those groups' samples over Σ|A| of all samples;
        `negative_abs_share`: Σ|A| of the samples with A < 0 over Σ|A| of all;
        `abs_mean`: the mean |A| of a sample. Shares are 0 when every advantage is 0.
    """
    signed = np.asarray(advantages, dtype=np.float64)
    if not len(signed) == len(group_ids) == len(won):
        raise ValueError(f"advantage_sources: {len(group_ids)} group ids, {len(won)} won flags and "
                         f"{len(signed)} advantages")
    if not len(signed):
        return {}
    groups = np.asarray([str(group) for group in group_ids], dtype=object)
    won_groups = set(groups[np.asarray(won, dtype=bool)].tolist())
    without_success = np.array([group not in won_groups for group in groups], dtype=bool)
    magnitude = np.abs(signed)
    total = magnitude.sum()
    distinct = set(groups.tolist())
    return {
        "no_success_group_share": 1.0 - len(won_groups) / len(distinct),
        "no_success_abs_share": float(magnitude[without_success].sum() / total) if total > 0 else 0.0,
        "negative_abs_share": float(magnitude[signed < 0].sum() / total) if total > 0 else 0.0,
        "abs_mean": float(magnitude.mean()),
    }
