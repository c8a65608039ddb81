"""The environment protocol the agent loop speaks: gymnasium's `Env` API with text actions.

    observation, info = env.reset(seed=seed, options={"game": path})
    observation, reward, terminated, truncated, info = env.step("take apple 1 from countertop 1")

An observation is text (`str`), or a mapping with "text" and "images" (a list of PIL images) for environments
that show pictures. `info` carries the keys below, so any gymnasium environment with text actions can be
trained the same way.
"""
from typing import Any, Protocol, SupportsFloat, TypedDict, runtime_checkable

from PIL.Image import Image

INFO_TASK = "task"  # str: the goal, as the agent is told it
INFO_ADMISSIBLE = "admissible_commands"  # list[str]: actions the environment accepts now
INFO_WON = "won"  # bool: the task is solved
INFO_TASK_TYPE = "task_type"  # str: the family of the task, for success rates per type
INFO_FAILED = "failed"  # bool, set when the environment broke (crash, hang): the episode ended there
# bool, set by an environment whose last action changed nothing (ALFWorld: "Nothing happens."). The observation is
# then feedback, not a state: the agent loop anchors the next step on the state it stayed in, as GiGPO groups
# steps by environment state (else every ignored action of a group shares one anchor, whatever its state)
INFO_UNCHANGED = "unchanged"


class ImageObservation(TypedDict):
    text: str
    images: list[Image]


Observation = str | ImageObservation


@runtime_checkable
class AgentEnv(Protocol):
    """One episode at a time of a text-action environment (gymnasium's `Env` API)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]: ...

    def step(self, action: str) -> tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]: ...

    def close(self) -> None: ...


def observation_text(observation: Observation) -> str:
    """The text part of an observation."""
    return observation if isinstance(observation, str) else observation["text"]


def describe_error(error: BaseException) -> str:
    """`Type: message` of an error, even one whose `str()` raises."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error's type
        message = "<message could not be formatted>"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
