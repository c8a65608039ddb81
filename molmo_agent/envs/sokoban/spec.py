"""Sokoban's registry entry: its session and knobs, a prompt that says how to read the image, actions checked
against the four moves, and an anchor of the image alone."""
import functools
from typing import Any

from molmo_agent.envs.base import INFO_ADMISSIBLE, Observation
from molmo_agent.envs.projection import ProjectedAction, project_action
from molmo_agent.envs.prompts import text_anchor, text_prompt
from molmo_agent.envs.registry import EnvSpec
from molmo_agent.envs.sokoban.render import LEGEND
from molmo_agent.envs.sokoban.session import SokobanEnv

ROLE = (f"You are an agent playing Sokoban in a room shown in the image: {LEGEND}. Each action moves you one "
        f"cell; walking into a box pushes it one cell further, unless a wall or another box is behind it. Boxes "
        f"can be pushed, never pulled.")


def sokoban_action(text: str, info: dict[str, Any]) -> ProjectedAction:
    """The tag format, and the action must be one of up, down, left, right: anything else counts as invalid."""
    return project_action(text, info.get(INFO_ADMISSIBLE), require_admissible=True)


def image_anchor(observation: Observation, info: dict[str, Any], step: int) -> str:
    """`text_anchor` of the image without the text: the text says how the agent got here (which move, what it
    pushed), so two sessions standing in the same room after different moves still share GiGPO's step group."""
    return text_anchor({"text": "", "images": observation["images"]}, info, step)


SPEC = EnvSpec(
    make=SokobanEnv,
    knobs={"room_size": 6, "num_boxes": 1},
    prompt=functools.partial(text_prompt, role=ROLE),
    parse_action=sokoban_action,
    anchor=image_anchor,
    images=True,
)
