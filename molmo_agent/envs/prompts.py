"""What the agent reads each step, and the anchor observation GiGPO groups steps by.

A prompt holds the task, the actions of the steps before the last k, the last k (observation, action) pairs, the
current observation and (when the environment lists them) the available actions, and asks for
`<think>…</think><action>…</action>`. The earlier actions cost a few tokens a step and are what lets a policy tell
where it has been: with the last k steps alone, a search sees no sign of the receptacles it opened before them,
and cloned searches loop (an SFT policy with k = 2 went back to a receptacle it had left more than two steps
earlier in 297 of 1186 moves on the 100 validation games:
tests/gpu/results/learn_rl_seed0_h200x2_2026-12-01.txt). All wording lives in the templates below; an environment
changes only its role sentence (`EnvSpec.prompt`).
"""
import hashlib
from collections.abc import Sequence
from typing import Any

from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK, Observation, observation_text

ROLE = "You are an agent in a text world."
TASK_PREFIX = "Your task is to: "
INSTRUCTIONS = (
    "First think step by step about what to do next, inside <think> </think>. "
    "Then give exactly one of the available actions, inside <action> </action>."
)

FIRST_STEP_TEMPLATE = """{role} Your task is to: {task}
What you see now: {observation}
{actions}
{instructions}"""

HISTORY_TEMPLATE = """{role} Your task is to: {task}
You have taken {steps_taken} step(s).{earlier}{recent}
Now, at step {step}, what you see: {observation}
{actions}
{instructions}"""

EARLIER_ACTIONS = " In steps 1 to {last} you did: {actions}."
RECENT_STEPS = " Your last {shown} step(s), oldest first:\n{lines}"
HISTORY_LINE = "Step {step}: you saw \"{observation}\" and did \"{action}\"."
ACTIONS_LINE = "Available actions: [{actions}].\n"


def build_prompt(
    task: str,
    observation: str,
    admissible: Sequence[str] | None,
    history: Sequence[tuple[str, str]] = (),
    history_length: int = 2,
    role: str = ROLE,
) -> str:
    """The prompt of one step.

    Args:
        task: the goal, as the environment's `info[INFO_TASK]` gives it.
        observation: this step's observation text (without the task).
        admissible: the actions the environment accepts now; None when it does not list them (no actions line).
        history: every earlier (observation, action) pair of the episode, oldest first; its length is the
            number of steps taken.
        history_length: how many of the latest pairs to show whole (k); the steps before them show their action
            only. 0 shows every earlier action and no observation.
        role: the opening sentence that says who the agent is.
    """
    if history_length < 0:
        raise ValueError(f"history_length must be >= 0, got {history_length}")
    actions = "" if admissible is None else ACTIONS_LINE.format(actions=", ".join(f"'{a}'" for a in admissible))
    shown = list(history)[-history_length:] if history_length else []
    if not history:
        return FIRST_STEP_TEMPLATE.format(
            role=role, task=task, observation=observation, actions=actions, instructions=INSTRUCTIONS
        )
    earlier = list(history)[: len(history) - len(shown)]
    first_shown = len(earlier) + 1
    lines = "\n".join(
        HISTORY_LINE.format(step=first_shown + i, observation=obs, action=act) for i, (obs, act) in enumerate(shown)
    )
    return HISTORY_TEMPLATE.format(
        role=role,
        task=task,
        steps_taken=len(history),
        earlier=EARLIER_ACTIONS.format(last=len(earlier), actions=", ".join(f"'{act}'" for _, act in earlier))
        if earlier else "",
        recent=RECENT_STEPS.format(shown=len(shown), lines=lines) if shown else "",
        step=len(history) + 1,
        observation=observation,
        actions=actions,
        instructions=INSTRUCTIONS,
    )


def text_prompt(
    observation: str, info: dict[str, Any], history: Sequence[tuple[str, str]], history_length: int, *,
    role: str = ROLE,
) -> str:
    """An `EnvSpec.prompt`: `build_prompt` with the task and the available actions from the step's info."""
    return build_prompt(info[INFO_TASK], observation, info.get(INFO_ADMISSIBLE), history, history_length, role)


def anchor_observation(observation: str, task: str, step: int) -> str:
    """GiGPO's anchor state of a step: its raw observation, with the task at step 0 — no history, no actions.

    Steps of a group with equal anchors share a step-level advantage group.
    """
    return f"{observation}\n\n{TASK_PREFIX}{task}" if step == 0 else observation


def text_anchor(observation: Observation, info: dict[str, Any], step: int) -> str:
    """An `EnvSpec.anchor`: `anchor_observation` of the text, followed by a digest of each image's pixels (mode,
    size and bytes), so two steps share an anchor only when they showed the same pictures, never by caption."""
    anchor = anchor_observation(observation_text(observation), info[INFO_TASK], step)
    if isinstance(observation, str):
        return anchor
    digests = [hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
               for image in observation["images"]]
    return "\n".join([anchor, *(f"<image sha256={digest}>" for digest in digests)])
