"""The ALFWorld game loader: alfworld's own rules (solvable only; no "movable" / "Sliced" paths), task type and
split from the layout, official and generated roots alike; unplayable games named, never a whole tree refused
without a name."""
import json
import logging
import pathlib

import pytest

from molmo_agent.envs.alfworld.games import (
    GAME_KEYS,
    SPLITS,
    TASK_TYPES,
    BadGamesError,
    Game,
    load_games,
    split_and_name,
    task_type_of,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "alfworld"


def add_game(root: pathlib.Path, split: str, task_dir: str, trial: str = "trial_T1", traj: bool = True,
             **game_fields) -> pathlib.Path:
    """A game directory in the official layout, with a game.tw-pddl holding the engine's keys and `game_fields`."""
    directory = root / "json_2.1.1" / split / task_dir / trial
    directory.mkdir(parents=True)
    if traj:
        (directory / "traj_data.json").write_text(json.dumps({"task_type": task_dir.split("-")[0]}))
    (directory / "game.tw-pddl").write_text(json.dumps({**dict.fromkeys(GAME_KEYS, ""), **game_fields}))
    return directory / "game.tw-pddl"


def test_rules_of_alfworlds_loader(tmp_path, caplog):
    kept = add_game(tmp_path, "train", "pick_and_place_simple-Apple-None-Fridge-1", solvable=True)
    add_game(tmp_path, "train", "pick_and_place_simple-Apple-None-Fridge-1", "trial_T2", solvable=False)
    add_game(tmp_path, "train", "pick_and_place_simple-Apple-None-Fridge-2")  # no "solvable" key
    add_game(tmp_path, "train", "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-1", solvable=True)
    add_game(tmp_path, "train", "pick_heat_then_place_in_recep-AppleSliced-None-Fridge-1", solvable=True)
    add_game(tmp_path, "train", "pick_cool_then_place_in_recep-Apple-None-Fridge-1", traj=False, solvable=True)
    with caplog.at_level(logging.INFO, logger="molmo_agent.envs.alfworld.games"):
        games = load_games(str(tmp_path))
    assert games == [Game(str(kept), "pick_and_place_simple", "train",
                          "pick_and_place_simple-Apple-None-Fridge-1/trial_T1")]
    assert caplog.messages == [f"{tmp_path / 'json_2.1.1'}: trials left out by alfworld's rules: 2 in movable or sliced "
                               "task directories, 2 unsolvable, 1 without game.tw-pddl or traj_data.json"]


def test_split_task_type_filters_and_order(tmp_path):
    a = add_game(tmp_path, "valid_unseen", "look_at_obj_in_light-Pen-None-DeskLamp-301", solvable=True)
    b = add_game(tmp_path, "train", "pick_two_obj_and_place-Egg-None-CounterTop-28", solvable=True)
    c = add_game(tmp_path, "train", "pick_clean_then_place_in_recep-Egg-None-CounterTop-28", solvable=True)
    assert [g.path for g in load_games(str(tmp_path))] == [str(c), str(b), str(a)]
    assert [g.split for g in load_games(str(tmp_path))] == ["train", "train", "valid_unseen"]
    assert [g.path for g in load_games(str(tmp_path), split="valid_unseen")] == [str(a)]
    assert load_games(str(tmp_path), split="valid_seen") == []
    only_two = load_games(str(tmp_path), task_types=("pick_two_obj_and_place",))
    assert [(g.path, g.task_type) for g in only_two] == [(str(b), "pick_two_obj_and_place")]
    # The json_2.1.1 directory itself is accepted as the root too.
    assert load_games(str(tmp_path / "json_2.1.1")) == load_games(str(tmp_path))


def test_committed_fixture_root_loads_as_alfworld_data():
    games = load_games(str(FIXTURES))
    assert len(games) == 18
    for split in SPLITS:
        assert sorted(g.task_type for g in games if g.split == split) == sorted(TASK_TYPES)
    for game in games:
        assert pathlib.Path(game.path).name == "game.tw-pddl"
        traj = json.loads((pathlib.Path(game.path).parent / "traj_data.json").read_text())
        assert traj["task_type"] == game.task_type


def test_task_type_parsed_from_directory_name():
    assert task_type_of("pick_cool_then_place_in_recep-Cup-None-SinkBasin-2") == "pick_cool_then_place_in_recep"
    with pytest.raises(ValueError, match="task type"):
        task_type_of("pick_everything-Cup-None-SinkBasin-2")


def unplayable_games(root: pathlib.Path) -> list[pathlib.Path]:
    """One game of each kind of unplayable game, in the loader's order, beside playable and skipped ones."""
    add_game(root, "train", "pick_and_place_simple-Apple-None-Fridge-1", solvable=True)
    add_game(root, "train", "pick_and_place_simple-Apple-None-Fridge-2", solvable=False, grammar=None)
    bad_json = add_game(root, "train", "pick_and_place_simple-Apple-None-Fridge-3")
    bad_json.write_text('{"solvable": true, "pddl_prob')  # cut short
    no_grammar = add_game(root, "valid_seen", "pick_heat_then_place_in_recep-Egg-None-CounterTop-3", solvable=True)
    no_grammar.write_text(json.dumps({"solvable": True, "pddl_domain": "", "pddl_problem": ""}))
    bad_traj = add_game(root, "valid_seen", "pick_heat_then_place_in_recep-Egg-None-CounterTop-4", solvable=True)
    (bad_traj.parent / "traj_data.json").write_text("")
    not_an_object = add_game(root, "valid_unseen", "look_at_obj_in_light-Pen-None-DeskLamp-301")
    not_an_object.write_text("[]")
    unknown_type = add_game(root, "valid_unseen", "pick_and_eat-Pen-None-DeskLamp-301", solvable=True)
    add_game(root, "valid_unseen", "look_at_obj_in_light-Pen-None-DeskLamp-302", solvable=True)
    return [bad_json, no_grammar, bad_traj, not_an_object, unknown_type]


def test_unplayable_games_are_refused_each_by_name(tmp_path):
    bad = unplayable_games(tmp_path)
    with pytest.raises(BadGamesError) as refused:
        load_games(str(tmp_path))
    assert [path for path, _ in refused.value.bad] == [str(path) for path in bad]
    message = str(refused.value)
    assert f"5 unplayable games under {tmp_path}" in message
    for path, reason in zip(bad, ["unreadable", "lacks the keys grammar", "traj_data.json unreadable",
                                  "holds a JSON list", "task type"]):
        assert f"{path}: " in message and reason in dict(refused.value.bad)[str(path)]
    assert "pddl_domain, grammar, pddl_problem" in message  # what a playable game holds
    # Only the splits and task types asked for are opened.
    assert load_games(str(tmp_path), split="train", task_types=("look_at_obj_in_light",)) == []


def test_skip_bad_leaves_unplayable_games_out_and_logs_each(tmp_path, caplog):
    bad = unplayable_games(tmp_path)
    with caplog.at_level(logging.WARNING, logger="molmo_agent.envs.alfworld.games"):
        games = load_games(str(tmp_path), skip_bad=True)
    assert [g.name for g in games] == ["pick_and_place_simple-Apple-None-Fridge-1/trial_T1",
                                       "look_at_obj_in_light-Pen-None-DeskLamp-302/trial_T1"]
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [f"skipping unplayable game {p}" for p in bad]


def test_a_long_list_of_unplayable_games_is_cut_with_a_count(tmp_path):
    for scene in range(12):
        add_game(tmp_path, "train", f"pick_and_place_simple-Apple-None-Fridge-{scene:02d}").write_text("")
    with pytest.raises(BadGamesError, match="12 unplayable games") as refused:
        load_games(str(tmp_path))
    assert len(refused.value.bad) == 12
    assert "Fridge-09" in str(refused.value) and "Fridge-10" not in str(refused.value)
    assert "and 2 more" in str(refused.value)


def test_a_root_without_games_folder_is_named_with_the_layout(tmp_path):
    for root, state in ((tmp_path, "holds no json_2.1.1/ directory"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(ValueError) as refused:
            load_games(str(root))
        assert f"{str(root)!r} {state}" in str(refused.value)
        assert "json_2.1.1/<split>/" in str(refused.value) and "game.tw-pddl" in str(refused.value)


def test_bad_inputs_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="json_2.1.1"):
        load_games(str(tmp_path))
    (tmp_path / "json_2.1.1").mkdir()
    with pytest.raises(ValueError, match="split"):
        load_games(str(tmp_path), split="test")
    with pytest.raises(ValueError, match="task types"):
        load_games(str(tmp_path), task_types=("pick_and_eat",))


def test_a_game_files_split_and_name_come_from_its_path_under_any_root():
    game = load_games(str(FIXTURES), "valid_seen")[0]
    assert split_and_name(game.path) == ("valid_seen", game.name)
    assert split_and_name("/elsewhere/json_2.1.1/train/" + game.name + "/game.tw-pddl") == ("train", game.name)
