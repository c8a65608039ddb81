"""Episode metrics of any environment: pure functions over episode records.

    records = [EpisodeRecord(task_type="pick_and_place_simple", won=True, length=7, invalid_actions=1), ...]
    episode_metrics(records)  # {"success_rate": ..., "success_rate/pick_and_place_simple": ..., ...}
"""
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode: its task type, whether it was won, its length in steps, how many of those steps had
    an invalid action (an answer out of format) and how many an inadmissible one (an action the environment did
    not list, malformed ones included: ALFWorld answers it "Nothing happens." and the step is lost, whatever the
    format). (An episode whose environment crashed or hung is dropped, not recorded.) Built from step samples in
    one place: `integrations.verl.steps.episode_record`."""

    task_type: str
    won: bool
    length: int
    invalid_actions: int = 0
    inadmissible_actions: int = 0


def success_rate(records: Sequence[EpisodeRecord]) -> float:
    """Fraction of episodes won; 0.0 for no episodes."""
    return sum(r.won for r in records) / len(records) if records else 0.0


def success_rate_by_task_type(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """Success rate of each task type present in `records`."""
    by_type: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_type[record.task_type].append(record)
    return {task_type: success_rate(group) for task_type, group in sorted(by_type.items())}


def mean_episode_length(records: Sequence[EpisodeRecord]) -> float:
    """Mean number of steps per episode; 0.0 for no episodes."""
    return sum(r.length for r in records) / len(records) if records else 0.0


def per_step(counts: Sequence[int], records: Sequence[EpisodeRecord]) -> float:
    """The episodes' `counts` (one per record) over all steps taken; 0.0 when no step was taken."""
    steps = sum(r.length for r in records)
    return sum(counts) / steps if steps else 0.0


def invalid_action_rate(records: Sequence[EpisodeRecord]) -> float:
    """Invalid actions over all steps taken."""
    return per_step([r.invalid_actions for r in records], records)


def inadmissible_action_rate(records: Sequence[EpisodeRecord]) -> float:
    """Inadmissible actions over all steps taken."""
    return per_step([r.inadmissible_actions for r in records], records)


def episode_metrics(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """All of the above in one flat dict, per-type success as "success_rate/<task type>"."""
    metrics = {
        "success_rate": success_rate(records),
        "episode_length": mean_episode_length(records),
        "invalid_action_rate": invalid_action_rate(records),
        "inadmissible_action_rate": inadmissible_action_rate(records),
    }
    metrics.update({f"success_rate/{t}": rate for t, rate in success_rate_by_task_type(records).items()})
    return metrics
