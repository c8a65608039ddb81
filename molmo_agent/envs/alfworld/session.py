"""One ALFWorld game on TextWorld's PDDL engine, as a gymnasium `Env` (`molmo_agent.envs.base`'s protocol).

    session = AlfworldSession()
    observation, info = session.reset(options={"game": "path/to/game.tw-pddl"})   # the room; info["task"]
    observation, reward, terminated, truncated, info = session.step("go to fridge 1")

The engine is TextWorld's `PddlEnv`; object names are demangled by alfworld's own `AlfredDemangler`
("Apple_bar__minus_01_dot_15_bar_..." → "apple 1"), exactly as ALFWorld shows them. We ask the engine for
nothing beyond what it always computes (admissible commands, `won`): no facts, no expert plan, no planner; we
parse its text grammar once per process instead of at every step (`grammar_cache`), and translate each game's
PDDL once per process instead of at every load and reset (`translation_cache`).
"""
import contextlib
import json
import os
import string
from collections.abc import Iterator
from typing import Any

import gymnasium
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
from textworld.envs.pddl import PddlEnv

from molmo_agent.envs.alfworld import grammar_cache, translation_cache
from molmo_agent.envs.alfworld.games import GAME_FILE, TRAJ_FILE
from molmo_agent.envs.base import (INFO_ADMISSIBLE, INFO_TASK, INFO_TASK_TYPE, INFO_UNCHANGED, INFO_WON,
                                   describe_error)

TASK_PREFIX = "Your task is to: "
BANNER = "-= Welcome to TextWorld, ALFRED! =-"
# ALFWorld lists `help` among the admissible commands; it does nothing in the game, so agents never see it.
HIDDEN_COMMANDS = frozenset({"help"})
NOTHING_HAPPENS = "Nothing happens."  # the engine's whole answer to a command it does not accept
UNKNOWN_TASK_TYPE = "unknown"


def game_path_and_type(game: Any) -> tuple[str, str]:
    """(path of game.tw-pddl, task type) of a game given as a path or as an object with `.path`/`.task_type`.

    For a bare path the task type comes from the `traj_data.json` beside it (ALFWorld's layout), if any.
    """
    if isinstance(game, (str, os.PathLike)):
        path = os.fspath(game)
        task_type = _task_type_beside(path)
    elif hasattr(game, "path"):
        path = os.fspath(game.path)
        task_type = str(getattr(game, "task_type", None) or _task_type_beside(path))
    else:
        raise ValueError(f"a game is a path or an object with a `path`; got {type(game).__name__}")
    if os.path.isdir(path):
        path = os.path.join(path, GAME_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"game file not found: {path}")
    return path, task_type


def _task_type_beside(path: str) -> str:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    traj = os.path.join(folder, TRAJ_FILE)
    if not os.path.isfile(traj):
        return UNKNOWN_TASK_TYPE
    try:
        with open(traj, encoding="utf-8") as f:
            return str(json.load(f).get("task_type", UNKNOWN_TASK_TYPE))
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"trial file {traj}: cannot read its task_type ({describe_error(error)}); ALFWorld's "
                         f"traj_data.json is a JSON object with a task_type") from None


def split_intro(text: str) -> tuple[str, str]:
    """ALFWorld's first observation → (room description, task). The task keeps its final period."""
    head, _, task = text.partition(TASK_PREFIX)
    return head.replace(BANNER, "").strip(), task.strip()


class AlfworldSession(gymnasium.Env):
    """One episode at a time of one ALFWorld game (gymnasium's `Env` API with text actions).

    The observation is ALFWorld's text without its banner and task sentence: the room at reset, the engine's
    feedback after each step; the task is `info[INFO_TASK]`. reward = `win_reward` on the step that wins, else 0;
    `terminated` when won; never `truncated` (`registry.make_env` adds the step limit). A session reloads the
    game only when it changes: a slot that plays its game again skips the load. `memoize_engine` memoizes, for the
    whole process, TextWorld's grammar derivations (`grammar_cache`: most of a step's CPU) and Fast
    Downward's translation of each game (`translation_cache`: most of a reset's CPU); the text is the same.
    """

    observation_space = gymnasium.spaces.Text(max_length=100_000, charset=string.printable)
    action_space = gymnasium.spaces.Text(max_length=200, charset=string.printable)

    def __init__(self, *, win_reward: float = 10.0, memoize_engine: bool = True) -> None:
        self.win_reward = float(win_reward)
        if memoize_engine:
            grammar_cache.install()
            translation_cache.install()
        self._env = AlfredDemangler(PddlEnv(textworld.EnvInfos(won=True, admissible_commands=True)))
        self._loaded_path: str | None = None
        self._task = ""
        self._task_type = UNKNOWN_TASK_TYPE
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start the game `options["game"]` (a path, or a `Game` with `.path` and `.task_type`).

        `seed` is accepted for the protocol; PDDL games are deterministic, so it changes nothing.
        """
        if not options or "game" not in options:
            raise ValueError('reset needs options={"game": <path to game.tw-pddl or Game>}')
        path, self._task_type = game_path_and_type(options["game"])
        if path != self._loaded_path:
            self._load(path)
        with self._engine_errors_name(path, "reset"):
            state = self._env.reset()
        room, self._task = split_intro(state.feedback.strip())
        self._done = False
        return room, self._info(state)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play `action` (text). A command the game does not accept leaves the state as it was ("Nothing happens.")."""
        if self._done:
            raise ValueError("the episode is over (or was never started): call reset first")
        if not isinstance(action, str):
            raise ValueError(f"an action is text, got {type(action).__name__}")
        with self._engine_errors_name(self._loaded_path, f"step {action!r}"):
            state, _, _ = self._env.step(action)
        won = bool(state["won"])
        self._done = won
        feedback = state.feedback.strip()
        info = {**self._info(state), INFO_UNCHANGED: feedback == NOTHING_HAPPENS}
        return feedback, self.win_reward * won, won, False, info

    def _load(self, path: str) -> None:
        # The engine takes the new game's problem before it can fail: until a load succeeds, no game counts as
        # loaded, so the next reset of any game (the last good one included) loads it in full.
        self._loaded_path = None
        with self._engine_errors_name(path, "load"):
            self._env.load(path)
        self._loaded_path = path

    @contextlib.contextmanager
    def _engine_errors_name(self, path: str | None, doing: str) -> Iterator[None]:
        """Turn whatever the engine raises into a ValueError naming the game file, and leave no game loaded.

        Fast Downward's parser reports some bad problems (a duplicated object) with SystemExit, which would end
        the caller's process: every BaseException but KeyboardInterrupt is caught. After a failure the engine's
        state is unknown, so the episode is over and the next reset loads its game afresh.
        """
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - SystemExit from the planner must not end the process
            self._loaded_path = None
            self._done = True
            raise ValueError(f"game file {path}: {doing} failed with {describe_error(error)} (a game file is the "
                             f"JSON that molmo_agent.envs.alfworld.generate writes, with pddl_domain, "
                             f"pddl_problem and grammar)") from None

    def close(self) -> None:
        self._env.close()
        self._loaded_path = None
        self._done = True

    def _info(self, state: textworld.core.GameState) -> dict[str, Any]:
        return {
            INFO_TASK: self._task,
            INFO_ADMISSIBLE: [c for c in state["admissible_commands"] if c not in HIDDEN_COMMANDS],
            INFO_WON: bool(state["won"]),
            INFO_TASK_TYPE: self._task_type,
        }
