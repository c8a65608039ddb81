"""Translate each game's PDDL to Fast Downward's SAS once per process, not four times per new game.

TextWorld's PDDL env builds a planner state on `load` and again on every `reset`, and each build translates the
domain and problem twice (`fast_downward.pddl2sas`: a plain task for play, an optimized one for replanning).
That translation is most of a reset's CPU, and it is a pure function of the two texts: the same (task, SAS text)
comes out for the same input. We memoize it: a new game costs two translations instead of four, and a game the
process has translated before (the other sessions of its group, the same validation games every time) none.
The translated task is only read by the engine (its actions, types, objects and initial facts), so the sessions
of a process share one instance; `tests/test_alfworld_session.py` compares the text against the plain engine.

`install()` swaps this process's `fast_downward.pddl2sas` for the memoized one; every PDDL env in it gains.
"""
import functools

import fast_downward

# Games whose translations a process keeps: a generated ALFWorld game's pair holds about 0.7 MB, so at most ~45 MB
# per environment worker, which serves a handful of sessions at a time (a group's games, a share of a split's).
MAX_GAMES = 64


def install() -> None:
    """Memoize Fast Downward's PDDL-to-SAS translation in this process (idempotent)."""
    if not installed():
        fast_downward.pddl2sas = functools.lru_cache(maxsize=2 * MAX_GAMES)(fast_downward.pddl2sas)


def installed() -> bool:
    """Whether `install()` ran in this process: the translation is the memoized one."""
    return hasattr(fast_downward.pddl2sas, "cache_info")
