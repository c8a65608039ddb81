"""Registered environments: `env.env_name` -> `EnvSpec`, everything the agent loop needs to play one.

    spec = get_env("alfworld")
    env = make_env("alfworld", max_steps=50)          # gymnasium Env, truncated after 50 steps
    prompt = spec.prompt(observation_text, info, history, history_length)
    action = spec.parse_action(model_text, info)       # ProjectedAction: .action, .valid
    anchor = spec.anchor(observation, info, step)      # GiGPO's anchor state of the step

ALFWorld and Sokoban are built in. A package adds an environment with one entry point in the group
`molmo_agent.envs` that names its `EnvSpec` (docs/environments.md shows a whole one); `python -m molmo_agent.envs`
lists every name.
Specs are imported only when asked for, so listing names imports no environment.
"""
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import gymnasium

from molmo_agent.envs.base import INFO_ADMISSIBLE, Observation
from molmo_agent.envs.projection import ProjectedAction, project_action
from molmo_agent.envs.prompts import text_anchor, text_prompt

ENTRY_POINT_GROUP = "molmo_agent.envs"
BUILTIN = {"alfworld": "molmo_agent.envs.alfworld.spec:SPEC", "sokoban": "molmo_agent.envs.sokoban.spec:SPEC"}

PromptBuilder = Callable[[str, dict[str, Any], Sequence[tuple[str, str]], int], str]
ActionParser = Callable[[str, dict[str, Any]], ProjectedAction]
Anchor = Callable[[Observation, dict[str, Any], int], str | bytes]


def text_action(text: str, info: dict[str, Any]) -> ProjectedAction:
    """An `EnvSpec.parse_action`: the `<think>…</think><action>…</action>` format, checked by `project_action`."""
    return project_action(text, info.get(INFO_ADMISSIBLE))


@dataclass(frozen=True)
class EnvSpec:
    """One environment, as the agent loop plays it.

    make: builds one environment (a `gymnasium.Env` with text actions, `molmo_agent.envs.base`'s protocol) from
        its knobs; it never truncates on its own: `make_env` adds the step limit.
    knobs: the `env.*` config keys this environment accepts, with their defaults; `make(**knobs)`.
    prompt: (observation text, info, history of (observation, action), history length) -> the step's prompt.
    parse_action: (the model's text, info) -> the action to play and whether it was well formed.
    anchor: (observation, info, step index) -> GiGPO's anchor state: equal anchors share a step group.
    images: whether observations carry pictures; without them the rollout may serve the model text-only.
    """

    make: Callable[..., gymnasium.Env]
    knobs: Mapping[str, Any] = field(default_factory=dict)
    prompt: PromptBuilder = text_prompt
    parse_action: ActionParser = text_action
    anchor: Anchor = text_anchor
    images: bool = False


def env_names() -> list[str]:
    """Every registered environment name, sorted (built-in and from installed packages' entry points)."""
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def get_env(name: str) -> EnvSpec:
    """The `EnvSpec` registered as `name`; a ValueError naming `env.env_name` and the known names otherwise."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if name in BUILTIN:
        module, _, attribute = BUILTIN[name].partition(":")
        spec = getattr(import_module(module), attribute)
    elif found:
        spec = found[0].load()
    else:
        raise ValueError(f"env.env_name={name!r} is not a registered environment; registered: {env_names()} "
                         f"(a package registers one with an entry point in the group {ENTRY_POINT_GROUP!r})")
    if not isinstance(spec, EnvSpec):
        raise TypeError(f"environment {name!r} is registered as {type(spec).__name__}, not an EnvSpec")
    return spec


def make_env(name: str, max_steps: int, **knobs: Any) -> gymnasium.Env:
    """Environment `name` built with `knobs` (its spec's defaults for the others), truncated after `max_steps`
    steps: the one place where episodes are cut short."""
    spec = get_env(name)
    unknown = sorted(set(knobs) - set(spec.knobs))
    if unknown:
        raise ValueError(f"env.{unknown[0]} is not a knob of the environment {name!r}; its knobs: "
                         f"{sorted(spec.knobs) or 'none'}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"env.max_steps must be an integer >= 1, got {max_steps!r}")
    env = spec.make(**{**spec.knobs, **knobs})
    if not isinstance(env, gymnasium.Env):
        raise TypeError(f"environment {name!r} made a {type(env).__name__}, not a gymnasium.Env")
    return gymnasium.wrappers.TimeLimit(env, max_episode_steps=max_steps)
