"""Find the playable games under an ALFWORLD_DATA-style root: the official download or our generator's output.

    games = load_games("/data/alfworld", split="train")   # or load_games(os.environ["ALFWORLD_DATA"])
    games[0].path       # .../json_2.1.1/train/pick_and_place_simple-Apple-None-Fridge-1/trial_T.../game.tw-pddl
    games[0].task_type  # "pick_and_place_simple"

The rules are those of alfworld's own loader (AlfredTWEnv.collect_game_files): a game is a directory holding
traj_data.json and game.tw-pddl; directories whose path contains "movable" or "Sliced" are skipped; a game file
without a "solvable" key, or with solvable false, is skipped.
"""
import json
import os
from dataclasses import dataclass

DATA_DIR = "json_2.1.1"
GAME_FILE = "game.tw-pddl"  # the PDDL game TextWorld plays
TRAJ_FILE = "traj_data.json"  # ALFRED's trial record: task type, scene, goal
SPLITS = ("train", "valid_seen", "valid_unseen")
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)


@dataclass(frozen=True)
class Game:
    path: str  # the game.tw-pddl file
    task_type: str  # one of TASK_TYPES, from the task directory's name
    split: str  # train, valid_seen or valid_unseen
    name: str  # "<task directory>/<trial directory>", unique within a split


def task_type_of(task_dir: str) -> str:
    """"pick_two_obj_and_place-Pencil-None-GarbageCan-320" -> "pick_two_obj_and_place"."""
    task_type = task_dir.split("-", 1)[0]
    if task_type not in TASK_TYPES:
        raise ValueError(f"game directory {task_dir!r} does not start with an ALFWorld task type {TASK_TYPES}")
    return task_type


def _is_solvable(game_file: str) -> bool:
    with open(game_file) as f:
        return bool(json.load(f).get("solvable", False))


def _split_games(split_dir: str, split: str) -> list[Game]:
    games = []
    for task_dir in sorted(os.listdir(split_dir)):
        task_path = os.path.join(split_dir, task_dir)
        if not os.path.isdir(task_path) or "movable" in task_path or "Sliced" in task_path:
            continue
        for trial in sorted(os.listdir(task_path)):
            trial_path = os.path.join(task_path, trial)
            game_file = os.path.join(trial_path, GAME_FILE)
            if not os.path.isfile(os.path.join(trial_path, TRAJ_FILE)) or not os.path.isfile(game_file):
                continue
            if _is_solvable(game_file):
                games.append(Game(game_file, task_type_of(task_dir), split, f"{task_dir}/{trial}"))
    return games


def load_games(root: str, split: str | None = None, task_types: tuple[str, ...] | None = None) -> list[Game]:
    """Solvable games under ROOT/json_2.1.1/<split>/ (every split if None), sorted by split then name.

    root: an ALFWORLD_DATA directory (holding json_2.1.1/), or the json_2.1.1 directory itself.
    task_types: keep only these (default: all six).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    unknown = set(task_types or ()) - set(TASK_TYPES)
    if unknown:
        raise ValueError(f"unknown task types {sorted(unknown)}; expected some of {TASK_TYPES}")
    data_dir = root if os.path.basename(os.path.normpath(root)) == DATA_DIR else os.path.join(root, DATA_DIR)
    if not os.path.isdir(data_dir):
        raise ValueError(f"{root!r} holds no {DATA_DIR}/ directory: not an ALFWORLD_DATA root")
    games = []
    for s in SPLITS if split is None else (split,):
        if os.path.isdir(os.path.join(data_dir, s)):
            games += _split_games(os.path.join(data_dir, s), s)
    return [g for g in games if task_types is None or g.task_type in task_types]
