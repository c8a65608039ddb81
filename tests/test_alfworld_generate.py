"""The ALFWorld game generator: games faithful to their AI2-THOR floor plan, winnable by their walkthrough in
TextWorld's PDDL engine, deterministic per seed, and the committed fixture set is exactly its output."""
import json
import os
import pathlib
import re

import pytest
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
from alfworld.gen import constants
from textworld.envs.pddl import PddlEnv

from molmo_agent.envs.alfworld import generate as generator
from molmo_agent.envs.alfworld import grammar_cache
from molmo_agent.envs.alfworld.games import TASK_TYPES, load_games
from molmo_agent.envs.alfworld.generate import GeneratedGame, generate, generate_game, main, write_game
from molmo_agent.envs.alfworld.scenes import (
    LAMP_STANDS,
    LAYOUTS_DIR,
    SEEN_FLOOR_PLANS,
    UNSEEN_FLOOR_PLANS,
    load_floor_plan,
)
from molmo_agent.envs.alfworld.tasks import candidate_tasks

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "alfworld"
FIXTURE_COUNTS = {"train": 6, "valid_seen": 6, "valid_unseen": 6}  # how the fixture set was made, with seed 0
FIXTURE_GAMES = load_games(str(FIXTURES))
FACT = re.compile(r"^\s*\((\w+) ([^()]*)\)\s*$", re.MULTILINE)


def thor_id(pddl_name: str) -> str:
    """Undo ALFRED's escaping of THOR ids in PDDL names."""
    for escaped, char in (("_minus_", "-"), ("_bar_", "|"), ("_plus_", "+"), ("_dot_", "."), ("_comma_", ",")):
        pddl_name = pddl_name.replace(escaped, char)
    return pddl_name


def init_facts(problem: str) -> dict[str, list[tuple[str, ...]]]:
    init = problem[problem.index("(:init"):problem.index("(:goal")]
    facts: dict[str, list[tuple[str, ...]]] = {}
    for predicate, args in FACT.findall(init):
        facts.setdefault(predicate, []).append(tuple(args.split()))
    return facts


def check_against_floor_plan(game_dir: pathlib.Path, split: str) -> None:
    """Every receptacle, object and placement of the game is allowed by its floor plan's files."""
    traj = json.loads((game_dir / "traj_data.json").read_text())
    problem = json.loads((game_dir / "game.tw-pddl").read_text())["pddl_problem"]
    number = traj["scene"]["scene_num"]
    layouts = pathlib.Path(LAYOUTS_DIR)
    room_types = set(json.loads((layouts / f"FloorPlan{number}-objects.json").read_text()))
    posed = json.loads((layouts / f"FloorPlan{number}-openable.json").read_text())

    scene_numbers = constants.TEST_SCENE_NUMBERS if split == "valid_unseen" else constants.TRAIN_SCENE_NUMBERS
    assert number in scene_numbers, f"{game_dir}: FloorPlan{number} does not belong to {split}"

    facts = init_facts(problem)
    rtype = {thor_id(r): t.removesuffix("Type") for r, t in facts["receptacleType"]}
    otype = {thor_id(o): t.removesuffix("Type") for o, t in facts["objectType"]}
    static = constants.RECEPTACLES - constants.MOVABLE_RECEPTACLES_SET
    posed_type = {rid: rid.split("|")[-1] if rid.split("|")[-1].isalpha() else rid.split("|")[0] for rid in posed}
    posed_static = {rid for rid, t in posed_type.items() if t in static}
    assert posed_static <= set(rtype), f"{game_dir}: receptacles of FloorPlan{number} are missing"
    for rid, t in rtype.items():
        assert t in room_types, f"{game_dir}: receptacle type {t} is not in FloorPlan{number}"
        if rid not in posed:  # added by the generator: only for a type the room has but -openable.json does not pose
            assert t not in posed_type.values(), f"{game_dir}: invented {rid} though FloorPlan{number} poses its {t}s"
        else:
            assert posed_type[rid] == t
    assert all(t in room_types for t in otype.values()), f"{game_dir}: object types not in FloorPlan{number}"

    for o, r in facts["inReceptacle"]:
        o_type, r_type = otype[thor_id(o)], rtype[thor_id(r)]
        allowed = LAMP_STANDS[o_type] if o_type in LAMP_STANDS else constants.VAL_RECEPTACLE_OBJECTS[r_type]
        assert (r_type if o_type in LAMP_STANDS else o_type) in allowed, f"{game_dir}: {o_type} in {r_type}"
    placed = {thor_id(o) for o, _ in facts["inReceptacle"]}
    assert placed == set(otype), f"{game_dir}: objects without a place"

    openable = {thor_id(r) for (r,) in facts.get("openable", [])}
    assert openable == {r for r, t in rtype.items() if t in constants.OPENABLE_CLASS_SET}
    assert "opened" not in facts, f"{game_dir}: a receptacle starts open"

    params = traj["pddl_params"]
    targets = [o for o, t in otype.items() if t == params["object_target"]]
    assert len(otype) > len(targets) + bool(params["toggle_target"]), f"{game_dir}: no distractors"


def play(game_file: str) -> bool:
    """Play the stored walkthrough through TextWorld's PDDL engine as ALFWorld wraps it; True if won.

    The engine's grammar parsing is memoized (grammar_cache: same text, tested against the plain engine) to keep
    the suite short on CI.
    """
    grammar_cache.install()
    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)), shuffle=False)
    env.load(game_file)
    state = env.reset()
    assert not state["won"]
    for command in json.loads(pathlib.Path(game_file).read_text())["walkthrough"]:
        assert command in state["admissible_commands"], f"{command!r} not admissible in {game_file}"
        state, _, _ = env.step(command)
    return state["won"]


def test_fixture_set_covers_every_task_type_in_every_split():
    for split in FIXTURE_COUNTS:
        assert sorted(g.task_type for g in FIXTURE_GAMES if g.split == split) == sorted(TASK_TYPES)


@pytest.mark.parametrize("game", FIXTURE_GAMES, ids=lambda g: f"{g.split}/{g.name}")
def test_committed_game_matches_its_floor_plan(game):
    check_against_floor_plan(pathlib.Path(game.path).parent, game.split)


@pytest.mark.parametrize("game", FIXTURE_GAMES, ids=lambda g: f"{g.split}/{g.name}")
def test_committed_walkthrough_wins(game):
    data = json.loads(pathlib.Path(game.path).read_text())
    assert data["solvable"] is True and data["walkthrough"]
    assert play(game.path)


def files_under(root: pathlib.Path) -> dict[str, bytes]:
    """Every file an ALFWORLD_DATA root of ours holds (json_2.1.1/, logic/), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for sub in ("json_2.1.1", "logic")
            for p in (root / sub).rglob("*") if p.is_file()}


@pytest.mark.slow
def test_fixture_set_is_the_generator_output(tmp_path):
    """Regenerating with the recorded command reproduces every committed file byte for byte."""
    main(["--out", str(tmp_path), "--seed", "0", "--workers", "1",
          *[arg for split, n in FIXTURE_COUNTS.items() for arg in (f"--{split.replace('_', '-')}", str(n))]])
    generated, committed = files_under(tmp_path), files_under(FIXTURES)
    assert sorted(generated) == sorted(committed)
    assert [name for name in generated if generated[name] != committed[name]] == []


def test_generation_does_not_depend_on_worker_count(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate(str(one), {"valid_seen": 3}, seed=7, workers=1)
    generate(str(two), {"valid_seen": 3}, seed=7, workers=2)
    assert files_under(one) == files_under(two)


def test_other_seeds_give_other_valid_games(tmp_path):
    game = generate_game("valid_unseen", 5, seed=123)
    assert game.traj_data["task_type"] == TASK_TYPES[5]
    assert game.game != generate_game("valid_unseen", 5, seed=0).game
    games = generate(str(tmp_path), {"valid_unseen": 2}, seed=123, workers=1)
    assert games == load_games(str(tmp_path))
    for g in games:
        check_against_floor_plan(pathlib.Path(g.path).parent, "valid_unseen")
        assert play(g.path)
    assert (tmp_path / "logic" / "alfred.pddl").read_text() == json.loads(pathlib.Path(games[0].path).read_text())[
        "pddl_domain"]


def stand_in_game(split: str, index: int, seed: int) -> GeneratedGame:
    """A committed game under the name generate_game gives (split, index, seed): the tree's files without the
    planner's time."""
    template = FIXTURE_GAMES[index % len(FIXTURE_GAMES)]
    folder = pathlib.Path(template.path).parent
    return GeneratedGame(split, f"{folder.parent.name}/trial_T{seed}_{index:06d}",
                         json.loads((folder / "game.tw-pddl").read_text()),
                         json.loads((folder / "traj_data.json").read_text()))


@pytest.fixture
def stand_in_games(monkeypatch):
    monkeypatch.setattr(generator, "generate_game", stand_in_game)


def run(out: pathlib.Path, *args: str) -> None:
    main(["--out", str(out), "--workers", "1", *args])


def test_an_out_folder_with_files_is_refused(tmp_path, stand_in_games):
    out = tmp_path / "games"
    run(out, "--train", "2")
    before = files_under(out)
    with pytest.raises(SystemExit, match=f"--out {out} already holds files; --overwrite"):
        run(out, "--train", "1", "--seed", "1")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=f"--out {out} holds notes.txt besides a game tree; --overwrite only"):
        run(out, "--train", "1", "--overwrite")
    with pytest.raises(SystemExit, match=f"--out {out / 'notes.txt'} is a file"):
        run(out / "notes.txt", "--train", "1")
    assert files_under(out) == before and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["games"]


def test_overwrite_replaces_the_tree_as_a_whole(tmp_path, stand_in_games, capsys):
    out = tmp_path / "games"
    out.mkdir()  # an empty folder is as good as a new one
    run(out, "--train", "2", "--valid-unseen", "1")
    run(out, "--valid-seen", "1", "--seed", "5", "--overwrite")
    assert [(g.split, g.name.split("/")[1]) for g in load_games(str(out))] == [("valid_seen", "trial_T5_000000")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["games"]  # no staging or old tree left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # the folder's usual permissions, not a temporary one's
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"{out} holds 1 games (train 0, valid_seen 1, valid_unseen 0)")


def test_a_failed_run_leaves_the_earlier_tree_as_it_was(tmp_path, stand_in_games, monkeypatch):
    out = tmp_path / "games"
    run(out, "--train", "2")
    before = files_under(out)

    def fails_at_the_second_game(split: str, index: int, seed: int) -> GeneratedGame:
        if index == 1:
            raise ValueError("no solvable game")
        return stand_in_game(split, index, seed)

    monkeypatch.setattr(generator, "generate_game", fails_at_the_second_game)
    with pytest.raises(SystemExit, match="no solvable game"):
        run(out, "--train", "3", "--seed", "1", "--overwrite")
    assert files_under(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["games"]


def test_games_that_do_not_read_back_are_not_swapped_in(tmp_path, monkeypatch):
    def unsolvable(split: str, index: int, seed: int) -> GeneratedGame:
        game = stand_in_game(split, index, seed)
        return GeneratedGame(split, game.directory, {**game.game, "solvable": False}, game.traj_data)

    monkeypatch.setattr(generator, "generate_game", unsolvable)
    with pytest.raises(RuntimeError, match="read back as"):
        generate(str(tmp_path / "games"), {"train": 1}, seed=0, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_keeps_the_earlier_file(tmp_path):
    good = stand_in_game("train", 0, seed=0)
    path = pathlib.Path(write_game(str(tmp_path), good))
    before = path.read_bytes()
    broken = GeneratedGame("train", good.directory, {**good.game, "walkthrough": [object()]}, good.traj_data)
    with pytest.raises(TypeError):  # json.dump fails after it has written part of the file
        write_game(str(tmp_path), broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["game.tw-pddl", "traj_data.json"]


def test_train_start_makes_the_training_games_an_earlier_tree_does_not_hold(tmp_path, stand_in_games):
    """--train 2 --train-start 2 writes training games 2 and 3, as a tree of 4 holds them; validation from 0."""
    run(tmp_path / "first4", "--train", "4", "--valid-seen", "1")
    run(tmp_path / "next2", "--train", "2", "--train-start", "2", "--valid-seen", "1")
    first4, next2 = files_under(tmp_path / "first4"), files_under(tmp_path / "next2")
    trials = sorted({pathlib.Path(name).parent.name for name in next2 if name.startswith("json_2.1.1/train/")})
    assert trials == ["trial_T0_000002", "trial_T0_000003"]
    assert all(first4[name] == content for name, content in next2.items())
    assert [name for name in next2 if "/valid_seen/" in name and "trial_T0_000000" in name]


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="split"):
        generate_game("test", 0, seed=0)
    with pytest.raises(ValueError, match="counts"):
        generate(str(tmp_path), {"train": -1}, seed=0, workers=1)
    with pytest.raises(ValueError, match="train-start"):
        generate(str(tmp_path), {"train": 1}, seed=0, workers=1, train_start=-1)


def test_floor_plan_partition_and_task_rooms():
    assert not set(SEEN_FLOOR_PLANS) & set(UNSEEN_FLOOR_PLANS)
    assert len(SEEN_FLOOR_PLANS) + len(UNSEEN_FLOOR_PLANS) == 120
    kitchen, bedroom = load_floor_plan(1), load_floor_plan(301)
    assert candidate_tasks(kitchen, "pick_heat_then_place_in_recep")
    assert candidate_tasks(bedroom, "pick_heat_then_place_in_recep") == []  # ALFRED heats in kitchens only
    for task in candidate_tasks(kitchen, "pick_cool_then_place_in_recep"):
        assert task.parent_target != "Fridge" and task.object_target in constants.VAL_ACTION_OBJECTS["Coolable"]
    with pytest.raises(ValueError, match="FloorPlan999"):
        load_floor_plan(999)
    with pytest.raises(ValueError, match="task type"):
        candidate_tasks(kitchen, "pick_and_eat")
