"""Demonstrations as the agent would have played them: each step's state, and the answer that takes its action.

    env = make_env("alfworld", max_steps=50)             # one for every demonstration: see demonstration_steps
    for step in demonstration_steps("alfworld", env, 50, {"game": path}, walkthrough):
        step.observation, step.info, step.history   # what the agent loop builds this step's prompt from
        step.response                               # "<think>My task is to ... I will go to desk 1.</think><action>go to desk 1</action>"

A demonstration is a list of actions that wins an episode (ALFWorld: the walkthrough stored in each game file).
It is played in the environment exactly as the agent loop plays (`make_env`, the same reset options and seed),
each action given as the answer text the model should learn to write, read back through the environment's
`parse_action` as the loop reads a model's answer; the history the next step shows is what the loop would have
kept. So a supervised row built from a step (integrations/verl/sft_data.py) sees the prompt a policy sees.

`relabeled_steps` plays another player's actions instead and answers each state it reaches with a demonstrator's
action there (DAgger: a policy's states, the expert's answers), so rows can teach what to do where a policy
actually goes.

The thought never mentions what the prompt does not show. `plain` restates the task (shown in every prompt) and
names the action (one of the available actions the prompt lists). `sighting` also says which things the task
names the current observation shows ("I see watch 1." / "I see nothing my task names."): cloned from plain
thoughts, a small policy walked past the target in view in about half the training states where the expert took
it; the sighting makes that lookup a step of its own, written before the action.
"""
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from molmo_agent.envs.base import INFO_TASK, INFO_WON, AgentEnv, Observation, observation_text
from molmo_agent.envs.projection import normalize
from molmo_agent.envs.registry import get_env

THOUGHT_TEMPLATE = "My task is to {task}. {sighting}I will {action}."
SIGHTING_TEMPLATE = "I see {things}. "
NOTHING_SIGHTED = "I see nothing my task names. "
THOUGHTS = ("plain", "sighting")
RESPONSE_TEMPLATE = "<think>{thought}</think><action>{action}</action>"
NUMBERED_THING = re.compile(r"\b([a-z]+) (\d+)\b")  # "watch 1", "countertop 2"


@dataclass(frozen=True)
class DemonstrationStep:
    """One agent step of a demonstration: the state before the action, and the answer that takes it.

    history: the earlier (observation text, action) pairs of the episode, oldest first, as the loop keeps them.
    """

    step: int
    observation: Observation
    info: dict[str, Any]
    history: tuple[tuple[str, str], ...]
    action: str
    response: str


def things_in_sight(task: str, observation: str) -> list[str]:
    """The numbered things `observation` mentions whose kind is a word of `task`, in order of first mention:
    ("put a watch in diningtable", "... you see a keychain 1, and a watch 1.") -> ["watch 1"]."""
    named = set(re.findall(r"[a-z]+", task.lower()))
    things: list[str] = []
    for kind, number in NUMBERED_THING.findall(observation.lower()):
        if kind in named and f"{kind} {number}" not in things:
            things.append(f"{kind} {number}")
    return things


def check_thought(thought: str) -> None:
    """A ValueError naming `thought` and the accepted ones unless it is one of THOUGHTS."""
    if thought not in THOUGHTS:
        raise ValueError(f"unknown thought {thought!r}: accepted are {list(THOUGHTS)}")


def demonstration_response(task: str, action: str, observation: str = "", thought: str = "plain") -> str:
    """The answer a demonstrator gives: `THOUGHT_TEMPLATE` (the task without its final period; with `sighting`,
    what of it `observation` shows; then the action) inside <think>, the action inside <action>."""
    check_thought(thought)
    sighting = ""
    if thought == "sighting":
        things = things_in_sight(task, observation)
        sighting = SIGHTING_TEMPLATE.format(things=", ".join(things)) if things else NOTHING_SIGHTED
    text = THOUGHT_TEMPLATE.format(task=task.strip().rstrip("."), sighting=sighting, action=action)
    return RESPONSE_TEMPLATE.format(thought=text, action=action)


def demonstration_steps(env_name: str, env: AgentEnv, max_steps: int, options: dict[str, Any],
                        actions: Sequence[str], seed: int | None = None, source: str = "the demonstration",
                        thought: str = "plain") -> Iterator[DemonstrationStep]:
    """Play `actions` in `env` (`make_env(env_name, max_steps, ...)`, reset with `options` and `seed`), yielding
    each step. The caller keeps `env` for its next demonstration (an ALFWorld engine is never freed: see
    `envs.alfworld.expert._expert_env`).

    A ValueError names `source` when an action's answer does not read back as that action, when the episode ends
    before the actions do (`max_steps`, the training config's `env.max_steps`, cuts it short), or when the
    actions run out without a win: a row from such a demonstration would teach a wrong answer.
    """
    played = [normalize(action) for action in actions]
    final_info = yield from _answered_steps(env_name, env, max_steps, options, played, actions, seed, source,
                                            thought)
    if not final_info.get(INFO_WON, False):
        raise ValueError(f"{source}: its {len(actions)} actions do not win the episode")


def relabeled_steps(env_name: str, env: AgentEnv, max_steps: int, options: dict[str, Any], played: Sequence[str],
                    labels: Sequence[str], seed: int | None = None, source: str = "the episode",
                    thought: str = "plain") -> Iterator[DemonstrationStep]:
    """Play `played` (a policy's actions, as its episode sent them) in `env` (`make_env(env_name, max_steps, ...)`,
    reset with `options` and `seed`), yielding the state before each of the first len(labels) actions with the
    answer that takes labels[t] instead: DAgger's rows, the policy's states and a demonstrator's answers (the history
    holds the actions played).

    A ValueError names `source` when a label's answer does not read back as that label, or when the episode ends
    before len(labels) states (more labels than actions, or `max_steps` cut it short).
    """
    if len(labels) > len(played):
        raise ValueError(f"{source}: {len(labels)} labels for {len(played)} actions")
    yield from _answered_steps(env_name, env, max_steps, options, played, labels, seed, source, thought)


def _answered_steps(env_name: str, env: AgentEnv, max_steps: int, options: dict[str, Any], played: Sequence[str],
                    answered: Sequence[str], seed: int | None, source: str,
                    thought: str) -> Iterator[DemonstrationStep]:
    """The states before played[t] with the answer (in `thought`'s words) taking answered[t], for
    t < len(answered); returns the info of the state the last played action reached."""
    spec = get_env(env_name)
    observation, info = env.reset(seed=seed, options=options)
    history: list[tuple[str, str]] = []
    terminated = truncated = False
    for step, (action, answer_action) in enumerate(zip(played, answered)):
        if terminated or truncated:
            ended = f"was cut at env.max_steps={max_steps}" if truncated else "ended"
            raise ValueError(f"{source}: the episode {ended} after {step} of its {len(answered)} actions")
        response = demonstration_response(str(info[INFO_TASK]), answer_action, observation_text(observation),
                                          thought)
        projected = spec.parse_action(response, info)
        if not projected.valid or projected.action != normalize(answer_action):
            raise ValueError(f"{source}: step {step}'s answer {response!r} reads back as {projected}, not as "
                             f"the action {answer_action!r}")
        yield DemonstrationStep(step, observation, info, tuple(history), projected.action, response)
        history.append((observation_text(observation), action))
        observation, _, terminated, truncated, info = env.step(action)
    return info
