"""Walkthroughs played as the agent loop plays: each step's state and the answer that takes its action."""
import json

import pytest

from molmo_agent.envs.alfworld.games import load_games, read_walkthrough
from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK, observation_text
from molmo_agent.envs.demonstrations import (demonstration_response, demonstration_steps, relabeled_steps,
                                           things_in_sight)
from molmo_agent.envs.projection import project_action
from molmo_agent.envs.registry import make_env

from alfworld_games import GAMES_ROOT, game_files, walkthrough

GAME = game_files()[0]  # look_at_obj_in_light: go to shelf 8, take vase 1 from shelf 8, go to sidetable 1, use ...


def play(actions, max_steps: int = 50):
    env = make_env("alfworld", max_steps)
    return list(demonstration_steps("alfworld", env, max_steps, {"game": GAME}, actions, source="test walkthrough"))


def test_response_restates_the_task_and_names_the_action():
    response = demonstration_response("put a clean cloth in cabinet.", "go to toilet 1")
    assert response == ("<think>My task is to put a clean cloth in cabinet. I will go to toilet 1.</think>"
                        "<action>go to toilet 1</action>")
    assert project_action(response, ["go to toilet 1"], require_admissible=True).action == "go to toilet 1"


def test_a_sighting_names_what_the_task_names_in_view_and_reads_back_as_the_action():
    observation = "You arrive at sidetable 1. On the sidetable 1, you see a keychain 1, a laptop 3, and a watch 1."
    assert things_in_sight("put a watch in diningtable.", observation) == ["watch 1"]
    assert things_in_sight("put a watch in sidetable.", observation) == ["sidetable 1", "watch 1"]  # once each
    response = demonstration_response("put a watch in diningtable.", "take watch 1 from sidetable 1", observation,
                                      thought="sighting")
    assert response == ("<think>My task is to put a watch in diningtable. I see watch 1. I will take watch 1 from "
                        "sidetable 1.</think><action>take watch 1 from sidetable 1</action>")
    assert project_action(response).action == "take watch 1 from sidetable 1"
    nothing = demonstration_response("put a pen in drawer.", "go to shelf 1", observation, thought="sighting")
    assert "I see nothing my task names. I will go to shelf 1." in nothing
    with pytest.raises(ValueError, match="unknown thought 'chatty'"):
        demonstration_response("put a pen in drawer.", "go to shelf 1", observation, thought="chatty")


def test_sighting_steps_say_what_each_steps_observation_shows():
    actions = walkthrough(GAME)
    env = make_env("alfworld", 50)
    steps = list(demonstration_steps("alfworld", env, 50, {"game": GAME}, actions, source="test walkthrough",
                                     thought="sighting"))
    assert [step.action for step in steps] == list(actions)
    for step in steps:
        task = step.info[INFO_TASK]
        assert step.response == demonstration_response(task, step.action, observation_text(step.observation),
                                                      thought="sighting")
    # the step that takes the target sees it: its kind is named in the task and the observation shows it
    take = next(step for step in steps if step.action.startswith("take"))
    taken = take.action.split(" from ")[0].removeprefix("take ")
    assert f"I see {taken}" in take.response or f", {taken}" in take.response


def test_walkthrough_steps_carry_the_loops_state_and_win():
    actions = walkthrough(GAME)
    steps = play(actions)
    assert [step.action for step in steps] == list(actions)
    assert [step.step for step in steps] == list(range(len(actions)))
    for step in steps:
        # The thought shows only what the prompt shows: the task, and one of the listed actions.
        assert step.response == demonstration_response(step.info[INFO_TASK], step.action)
        assert step.action in step.info[INFO_ADMISSIBLE]
        # The history is the loop's: every earlier (observation, action) pair, oldest first.
        assert [action for _, action in step.history] == list(actions[: step.step])
    assert steps[1].history[0][0] == steps[0].observation
    assert "vase 1" in steps[2].history[1][0]  # step 1's observation at shelf 8 shows the vase


@pytest.mark.parametrize("actions, max_steps, message", [
    (lambda w: w[:-1], 50, "do not win the episode"),
    (lambda w: (*w, "look"), 50, "the episode ended after 4 of its 5 actions"),
    (lambda w: w, 2, "was cut at env.max_steps=2 after 2 of its 4 actions"),
    (lambda w: ("go to <shelf 8>", *w), 50, "reads back as"),
], ids=["short", "past the win", "max_steps", "unreadable"])
def test_a_walkthrough_that_does_not_replay_is_refused_by_name(actions, max_steps, message):
    with pytest.raises(ValueError, match=f"test walkthrough: .*{message}"):
        play(actions(walkthrough(GAME)), max_steps)


def test_read_walkthrough_names_a_game_file_without_one(tmp_path):
    assert read_walkthrough(GAME) == list(walkthrough(GAME))
    data = json.loads(open(GAME).read())
    del data["walkthrough"]
    bare = tmp_path / "game.tw-pddl"
    bare.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"game file {bare}: no walkthrough"):
        read_walkthrough(str(bare))


def test_the_experts_demonstration_is_the_same_whatever_the_callers_random_state():
    """The expert draws from Python's global `random` (breaking ties: on the fixture's pick_clean_then_place game
    its seed picks one of three demonstrations): it runs on its own seed, and the caller's generator is left as it
    was."""
    import random

    from molmo_agent.envs.alfworld.expert import expert_actions

    game = next(g for g in load_games(str(GAMES_ROOT), "train") if g.task_type == "pick_clean_then_place_in_recep")
    assert len({tuple(expert_actions(game.path, 50, seed)) for seed in range(6)}) > 1  # the draws matter here
    outcomes = []
    for outer_seed in range(6):
        random.seed(outer_seed)
        before = random.getstate()
        outcomes.append(expert_actions(game.path, 50))
        assert random.getstate() == before
    assert all(outcome == outcomes[0] for outcome in outcomes)


def test_the_mended_expert_places_both_objects_of_pick_two():
    """alfworld's wrapper lets the expert hear "move X to Y" unchanged, and its bookkeeping notes a placement only
    on "put": on the fixture's pick_two games it then loops (5 seeds: it won at most 2 of 5), mended it wins each."""
    from alfworld.agents.environment.alfred_tw_env import AlfredExpert

    from molmo_agent.envs.alfworld import expert

    games = [g.path for g in load_games(str(GAMES_ROOT)) if g.task_type == "pick_two_obj_and_place"]

    def wins(path: str) -> int:
        won = 0
        for seed in range(5):
            try:
                won += len(expert.expert_actions(path, 50, seed)) > 0
            except ValueError:
                pass
        return won

    assert [wins(path) for path in games] == [5, 5, 5]
    expert._expert_env.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(expert, "MendedExpert", AlfredExpert)
            assert all(wins(path) <= 2 for path in games)
    finally:
        expert._expert_env.cache_clear()


def test_the_expert_plays_every_game_on_one_engine_as_a_fresh_engine_would(monkeypatch):
    """Each engine maps its own 33 MB copy of Fast Downward's library until the process ends: the expert loads one
    per process, and a game played after others gives the actions it gives on a fresh engine."""
    import fast_downward

    from molmo_agent.envs.alfworld import expert

    games = [g.path for g in load_games(str(GAMES_ROOT), "train")[:3]]

    def play(path: str) -> list[str] | str:
        try:
            return expert.expert_actions(path, 50)
        except ValueError as error:
            return str(error)

    fresh = []
    for path in games:
        expert._expert_env.cache_clear()
        fresh.append(play(path))
    loads = []
    load_lib = fast_downward.load_lib
    monkeypatch.setattr(fast_downward, "load_lib", lambda: loads.append(1) or load_lib())
    expert._expert_env.cache_clear()
    in_turn = [play(path) for path in games + games[::-1]]
    assert len(loads) == 1
    assert in_turn == fresh + fresh[::-1]


def test_relabeled_steps_are_the_played_states_answered_with_the_labels():
    """DAgger's rows: the states a policy's actions reached (its actions in the history, an inadmissible one
    answered "Nothing happens."), each answered with the demonstrator's action instead."""
    played = ["go to shelf 8", "take nothing 1 from nowhere 1", "take vase 1 from shelf 8", "look"]
    labels = ["look", "take vase 1 from shelf 8", "take vase 1 from shelf 8"]
    env = make_env("alfworld", 50)
    steps = list(relabeled_steps("alfworld", env, 50, {"game": GAME}, played, labels, source="test episode"))
    assert [step.action for step in steps] == labels  # one state per label, the last action never answered
    assert [step.response for step in steps] == [demonstration_response(steps[0].info[INFO_TASK], label)
                                                 for label in labels]
    assert [action for _, action in steps[2].history] == played[:2]
    assert "vase 1" in steps[1].observation and steps[2].observation == "Nothing happens."
    with pytest.raises(ValueError, match="test episode: 4 labels for 3 actions"):
        list(relabeled_steps("alfworld", env, 50, {"game": GAME}, played[:3], [*labels, "look"],
                             source="test episode"))
    with pytest.raises(ValueError, match="test episode: the episode was cut at env.max_steps=2 after 2 of its 3"):
        list(relabeled_steps("alfworld", make_env("alfworld", 2), 2, {"game": GAME}, played, labels,
                             source="test episode"))


def test_the_expert_labels_its_own_path_with_its_actions_and_a_detour_with_what_it_still_wants():
    from molmo_agent.envs.alfworld.expert import expert_actions, expert_labels

    game = next(g for g in load_games(str(GAMES_ROOT), "train") if g.task_type == "pick_and_place_simple").path
    actions = expert_actions(game, 50)  # look, go to sofa 1, go to sidetable 1, take laptop 1 from sidetable 1, ...
    assert expert_labels(game, actions) == actions
    assert expert_labels(game, [*actions, "look"]) == actions  # nothing left to label once the game is won
    detour = [actions[0], "take nothing 1 from nowhere 1", "go to sidetable 1", "take nothing 1 from nowhere 1"]
    # labels[t] answers detour[:t]: past a failed take it still goes to the sofa; at the sidetable it takes the laptop
    assert expert_labels(game, detour) == [actions[0], actions[1], actions[1], actions[3]]


def test_labels_of_a_game_that_does_not_load_are_an_error_not_an_empty_list(tmp_path):
    from molmo_agent.envs.alfworld.expert import expert_labels

    with pytest.raises(FileNotFoundError):
        expert_labels(str(tmp_path / "missing" / "game.tw-pddl"), ["look"])
