"""Prompt templates against golden files (tests/golden/alfworld_*.txt, with ALFWorld's role sentence), history
windows, anchors.

After an intended wording change, rewrite the golden files with:
    UPDATE_GOLDEN=1 python -m pytest tests/test_prompts.py
"""
import functools
import os
import pathlib

import pytest

from PIL import Image

from molmo_agent.envs import prompts
from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK
from molmo_agent.envs.prompts import anchor_observation, text_anchor

ALFWORLD_ROLE = "You are a household agent in a text world."  # molmo_agent.envs.alfworld.spec.ROLE
build_prompt = functools.partial(prompts.build_prompt, role=ALFWORLD_ROLE)

GOLDEN = pathlib.Path(__file__).parent / "golden"
TASK = "put a clean mug in coffeemachine."
ROOM = "You are in the middle of a room. Looking quickly around you, you see a coffeemachine 1, a fridge 1, and a sinkbasin 1."
HISTORY = [
    (ROOM, "go to sinkbasin 1"),
    ("You arrive at sinkbasin 1. On the sinkbasin 1, you see a mug 1.", "take mug 1 from sinkbasin 1"),
    ("You pick up the mug 1 from the sinkbasin 1.", "clean mug 1 with sinkbasin 1"),
]
NOW = "You clean the mug 1 using the sinkbasin 1."
ADMISSIBLE = ["examine mug 1", "go to coffeemachine 1", "go to fridge 1", "inventory", "look"]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; see this module's docstring to accept the change"


def test_first_step_prompt_golden():
    check_golden("alfworld_prompt_step0.txt", build_prompt(TASK, ROOM, ["go to sinkbasin 1", "look"]))


def test_history_prompt_golden():
    check_golden("alfworld_prompt_history2.txt", build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=2))


def test_history_window_shows_the_latest_pairs_numbered_by_step():
    prompt = build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=2)
    assert "You have taken 3 step(s)." in prompt and "Your last 2 step(s)" in prompt and "at step 4" in prompt
    assert 'Step 2: you saw "You arrive at sinkbasin 1.' in prompt and "Step 3:" in prompt
    assert "Step 1:" not in prompt
    everything = build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=10)
    assert "Your last 3 step(s)" in everything and 'Step 1: you saw "You are in the middle' in everything


def test_steps_before_the_window_show_their_actions_only():
    prompt = build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=2)
    assert "You have taken 3 step(s). In steps 1 to 1 you did: 'go to sinkbasin 1'. Your last 2 step(s)" in prompt
    assert ROOM not in prompt  # step 1's observation is outside the window
    everything = build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=10)
    assert "you did:" not in everything


def test_k_zero_lists_every_earlier_action_and_no_observation():
    prompt = build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=0)
    assert ("In steps 1 to 3 you did: 'go to sinkbasin 1', 'take mug 1 from sinkbasin 1', "
            "'clean mug 1 with sinkbasin 1'.\nNow, at step 4, what you see: " + NOW) in prompt
    assert "you saw" not in prompt and "Your last" not in prompt


def test_no_history_at_step_zero_and_k_must_not_be_negative():
    assert build_prompt(TASK, NOW, ADMISSIBLE, [], history_length=2) == build_prompt(TASK, NOW, ADMISSIBLE)
    assert "You have taken" not in build_prompt(TASK, NOW, ADMISSIBLE)
    with pytest.raises(ValueError, match="history_length"):
        build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=-1)


def test_prompt_lists_actions_and_asks_for_tags():
    prompt = build_prompt(TASK, NOW, ADMISSIBLE)
    assert "['examine mug 1', 'go to coffeemachine 1', 'go to fridge 1', 'inventory', 'look']" in prompt
    assert "<think> </think>" in prompt and "<action> </action>" in prompt and f"Your task is to: {TASK}" in prompt


def test_anchor_is_the_raw_observation_with_the_task_at_step_zero():
    check_golden("alfworld_anchor_step0.txt", anchor_observation(ROOM, TASK, step=0))
    assert anchor_observation(NOW, TASK, step=3) == NOW
    # Two trajectories of a group that reach the same state share an anchor, whatever their history.
    assert anchor_observation(NOW, TASK, 3) == anchor_observation(NOW, TASK, 5)


def test_alfworld_spec_prompts_with_its_role_and_the_info():
    from molmo_agent.envs.registry import get_env

    spec = get_env("alfworld")
    info = {INFO_TASK: TASK, INFO_ADMISSIBLE: ADMISSIBLE}
    assert spec.prompt(NOW, info, HISTORY, 2) == build_prompt(TASK, NOW, ADMISSIBLE, HISTORY, history_length=2)


def test_without_an_action_list_there_is_no_actions_line():
    prompt = prompts.build_prompt(TASK, NOW, None)
    assert prompt.startswith(prompts.ROLE) and "Available actions" not in prompt
    assert prompt == prompts.text_prompt(NOW, {INFO_TASK: TASK}, [], 2)


def test_image_anchors_differ_by_pixels_not_by_caption():
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    info = {INFO_TASK: TASK}
    seen_red = text_anchor({"text": "a box", "images": [red]}, info, 1)
    assert seen_red == text_anchor({"text": "a box", "images": [red.copy()]}, info, 1)
    assert seen_red != text_anchor({"text": "a box", "images": [blue]}, info, 1)
    assert seen_red.startswith("a box\n<image sha256=")
    assert text_anchor("a box", info, 1) == "a box"
