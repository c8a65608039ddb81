"""ALFWorld's hand-coded expert as a demonstration source: it searches receptacles as a player must.

    actions = expert_actions("path/to/game.tw-pddl", max_steps=30)   # a winning action list, or ValueError
    labels = expert_labels("path/to/game.tw-pddl", policy_actions)     # its action at each state a policy reached

A game's stored walkthrough comes from the planner, which knows where every object is: its first action may go
straight to a receptacle the observation never mentioned, so a policy cloned from it learns to guess. alfworld's
hand-coded expert (`alfworld.agents.expert.HandCodedTWAgent`, through alfworld's own `AlfredExpert` wrapper)
decides from what it has seen: it walks to receptacles in turn, opens them, and takes the object once it shows.
Its actions are played here on the same engine and names as `AlfworldSession` (TextWorld's `PddlEnv` with
`AlfredDemangler`), plus the game facts the expert reads; `envs.demonstrations` then replays them in the
environment as the agent loop plays it. `expert_labels` asks the same expert what it would do at each state another
player's actions reach (DAgger's relabelling: alfworld trains its own text agents that way).

One mend (`MendedExpert`): the expert's bookkeeping notes an object put down only when the command says "put",
the word of alfworld's older grammar, while the game's command is "move X to Y"; unmended, after placing the first
object of pick_two_obj_and_place it believes it still holds it and loops. Within 30 steps it won 5 of the first
40 such generated training games unmended and 31 mended; on the other task types the placement ends the game and
both play the same actions (bench/alfworld_demonstrations.py).
"""
import contextlib
import functools
import random
from collections.abc import Iterator, Sequence

import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredExpertType
from textworld.envs.pddl import PddlEnv

from molmo_agent.envs.alfworld import grammar_cache, translation_cache


def expert_actions(game_file: str, max_steps: int, seed: int = 0) -> list[str]:
    """The hand-coded expert's actions from the start of `game_file` until it wins.

    The expert breaks ties and escapes repeated actions with Python's global `random`: it runs here on that
    generator seeded with `seed` (the caller's state is put back after), so a game's demonstration is the same in
    every process. A ValueError names the game when the expert has not won after `max_steps` actions (a
    demonstration the training config's `env.max_steps` would cut short) or when it fails on the game.
    """
    with _seeded(seed):
        return _play(game_file, max_steps)


def expert_labels(game_file: str, actions: Sequence[str], seed: int = 0) -> list[str]:
    """The hand-coded expert's next action at each state that `actions` reach from the start of `game_file`:
    labels[t] is its answer after actions[:t], so len(labels) <= len(actions).

    The expert watches every action played, as it watches its own, and answers as in its demonstrations ("look"
    where its choice is not admissible, a random admissible action where it would repeat the last one; seeded as
    `expert_actions`). Labelling stops early where the game is won (nothing left to label) or the expert fails (its
    later answers would come from a broken plan): the labels of the states before stay valid.
    """
    env = _expert_env()
    labels: list[str] = []
    with _seeded(seed):
        env.load(game_file)  # a game that does not load is the caller's error, raised
        state = env.reset()
        try:
            for action in actions:
                if state["won"]:
                    break
                labels.append(state["extra.expert_plan"][0])
                state, _, _ = env.step(action)
        except Exception:  # the expert's own failures (HandCodedAgentFailed, its timeout, ...)
            pass
    return labels


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's global `random`, which the expert draws from, seeded with `seed`; the caller's state put back."""
    outer_state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(outer_state)


PLACEMENT, PUT = "move ", "put "  # the game's placement command, and the word the expert's bookkeeping reads


class MendedExpert(AlfredExpert):
    """alfworld's expert wrapper with one change: the expert hears a placement, "move X to Y", as "put X to Y"
    (module docstring). The engine still receives the command as given."""

    def _gather_infos(self) -> None:
        command = self.prev_command
        if command.startswith(PLACEMENT):
            self.prev_command = PUT + command.removeprefix(PLACEMENT)
        try:
            super()._gather_infos()
        finally:
            self.prev_command = command


@functools.cache
def _expert_env() -> AlfredExpert:
    """This process's expert, loaded with each game in turn (its `load` starts a fresh expert). One engine, not one
    a game: every `PddlEnv` maps its own 33 MB copy of Fast Downward's library, deleted but held on disk until the
    process ends, so an engine a game filled the disk after about a thousand games."""
    grammar_cache.install()
    translation_cache.install()
    infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, feedback=True)
    return MendedExpert(AlfredDemangler(PddlEnv(infos)), expert_type=AlfredExpertType.HANDCODED)


def _play(game_file: str, max_steps: int) -> list[str]:
    env = _expert_env()
    actions: list[str] = []
    try:
        env.load(game_file)
        state = env.reset()
        while not state["won"]:
            if len(actions) == max_steps:
                raise ValueError(f"game file {game_file}: alfworld's hand-coded expert has not won after "
                                 f"{max_steps} actions (env.max_steps)")
            actions.append(state["extra.expert_plan"][0])
            state, _, _ = env.step(actions[-1])
    except ValueError:
        raise
    except Exception as error:  # the expert's own failures (HandCodedAgentFailed, its timeout, ...)
        raise ValueError(f"game file {game_file}: alfworld's hand-coded expert failed after {len(actions)} actions: "
                         f"{type(error).__name__}: {error}") from None
    return actions
