"""Find the playable games under an ALFWORLD_DATA-style root: the official download or our generator's output.

    games = load_games("/data/alfworld", split="train")   # or load_games(os.environ["ALFWORLD_DATA"])
    games[0].path       # .../json_2.1.1/train/pick_and_place_simple-Apple-None-Fridge-1/trial_T.../game.tw-pddl
    games[0].task_type  # "pick_and_place_simple"

The rules are those of alfworld's own loader (AlfredTWEnv.collect_game_files): a game is a directory holding
traj_data.json and game.tw-pddl; directories whose path contains "movable" or "Sliced" are skipped; a game file
without a "solvable" key, or with solvable false, is skipped; the count of trials each rule leaves out is logged
(INFO). Every other game is opened and checked: a game file
that is not a JSON object with the keys TextWorld's PDDL engine reads, a traj_data.json that is not a JSON object,
or a task directory named after no ALFWorld task type makes the game unplayable, and load_games names each one.
"""
import json
import logging
import os
from collections import Counter
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
GAME_KEYS = ("pddl_domain", "grammar", "pddl_problem")  # what TextWorld's PddlEnv.load reads from a game file
LISTED_BAD_GAMES = 10  # unplayable games an error message names before it only counts the rest
LAYOUT = (f"ROOT/{DATA_DIR}/<split>/<task type>-<object>-<receptacle>-<parent>-<scene>/<trial>/"
          f"{{{GAME_FILE}, {TRAJ_FILE}}} with <split> one of {', '.join(SPLITS)}, as ALFWorld's download or "
          "`python -m molmo_agent.envs.alfworld.generate --out ROOT` writes")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Game:
    path: str  # the game.tw-pddl file
    task_type: str  # one of TASK_TYPES, from the task directory's name
    split: str  # train, valid_seen or valid_unseen
    name: str  # "<task directory>/<trial directory>", unique within a split


def split_and_name(game_file: str) -> tuple[str, str]:
    """(split, `Game.name`) of a game file from its path, <split>/<task directory>/<trial directory>/game.tw-pddl:
    the same game under any root."""
    trial = os.path.dirname(game_file)
    task = os.path.dirname(trial)
    return os.path.basename(os.path.dirname(task)), f"{os.path.basename(task)}/{os.path.basename(trial)}"


def task_type_of(task_dir: str) -> str:
    """"pick_two_obj_and_place-Pencil-None-GarbageCan-320" -> "pick_two_obj_and_place"."""
    task_type = task_dir.split("-", 1)[0]
    if task_type not in TASK_TYPES:
        raise ValueError(f"game directory {task_dir!r} does not start with an ALFWorld task type {TASK_TYPES}")
    return task_type


class BadGamesError(ValueError):
    """Games under a root that cannot be played; `bad` holds every (game file, reason)."""

    def __init__(self, root: str, bad: list[tuple[str, str]]):
        self.root = root
        self.bad = bad
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad[:LISTED_BAD_GAMES])
        more = f"; and {len(bad) - LISTED_BAD_GAMES} more" if len(bad) > LISTED_BAD_GAMES else ""
        super().__init__(
            f"{len(bad)} unplayable game{'s' if len(bad) > 1 else ''} under {root}: {listed}{more}. A playable game "
            f"is a {GAME_FILE} holding a JSON object with the keys {', '.join(GAME_KEYS)} and a JSON object in the "
            f"{TRAJ_FILE} beside it, in a task directory named after an ALFWorld task type")


def _read_json_object(path: str) -> dict:
    """The JSON object in `path`; ValueError saying what is wrong with the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"holds a JSON {type(data).__name__}, not an object")
    return data


def _is_playable(game_file: str) -> bool:
    """False for a game alfworld's rules skip (no "solvable" key, or solvable false); ValueError if unplayable."""
    game = _read_json_object(game_file)
    if not game.get("solvable", False):
        return False
    missing = [key for key in GAME_KEYS if key not in game]
    if missing:
        raise ValueError(f"lacks the keys {', '.join(missing)}")
    try:
        _read_json_object(os.path.join(os.path.dirname(game_file), TRAJ_FILE))
    except ValueError as error:
        raise ValueError(f"its {TRAJ_FILE} {error}") from None
    return True


def read_walkthrough(game_file: str) -> list[str]:
    """The winning commands stored in a game file (our generator's planner-verified `walkthrough`)."""
    try:
        walkthrough = _read_json_object(game_file).get("walkthrough")
    except ValueError as error:
        raise ValueError(f"game file {game_file}: {error}") from None
    if not isinstance(walkthrough, list) or not walkthrough or not all(isinstance(c, str) for c in walkthrough):
        raise ValueError(f"game file {game_file}: no walkthrough (a non-empty list of commands under the key "
                         "'walkthrough', as molmo_agent.envs.alfworld.generate writes it)")
    return walkthrough


def _split_games(split_dir: str, split: str, task_types: tuple[str, ...],
                 skipped: Counter) -> tuple[list[Game], list[tuple[str, str]]]:
    """(playable games, [(game file, reason)] of unplayable ones) of one split directory; counts into `skipped` the
    trials alfworld's rules leave out, by rule."""
    games, bad = [], []
    for task_dir in sorted(os.listdir(split_dir)):
        task_path = os.path.join(split_dir, task_dir)
        if not os.path.isdir(task_path):
            continue
        trials = sorted(os.listdir(task_path))
        if "movable" in task_path or "Sliced" in task_path:
            skipped["in movable or sliced task directories"] += len(trials)
            continue
        for trial in trials:
            trial_path = os.path.join(task_path, trial)
            game_file = os.path.join(trial_path, GAME_FILE)
            if not os.path.isfile(os.path.join(trial_path, TRAJ_FILE)) or not os.path.isfile(game_file):
                skipped[f"without {GAME_FILE} or {TRAJ_FILE}"] += 1
                continue
            try:
                task_type = task_type_of(task_dir)
                if task_type not in task_types:
                    continue
                if _is_playable(game_file):
                    games.append(Game(game_file, task_type, split, f"{task_dir}/{trial}"))
                else:
                    skipped["unsolvable"] += 1
            except ValueError as error:
                bad.append((game_file, str(error)))
    return games, bad


def _data_dir(root: str) -> str:
    """ROOT/json_2.1.1 (or ROOT itself if it is the json_2.1.1 directory); ValueError naming ROOT if absent."""
    data_dir = root if os.path.basename(os.path.normpath(root)) == DATA_DIR else os.path.join(root, DATA_DIR)
    if not os.path.isdir(data_dir):
        state = "does not exist" if not os.path.exists(root) else f"holds no {DATA_DIR}/ directory"
        raise ValueError(f"game root {root!r} {state}: expected an ALFWORLD_DATA root laid out as {LAYOUT}")
    return data_dir


def load_games(root: str, split: str | None = None, task_types: tuple[str, ...] | None = None, *,
               skip_bad: bool = False) -> list[Game]:
    """Playable games under ROOT/json_2.1.1/<split>/ (every split if None), sorted by split then name.

    root: an ALFWORLD_DATA directory (holding json_2.1.1/), or the json_2.1.1 directory itself.
    task_types: keep only these (default: all six); games of other types are not opened.
    skip_bad: an unplayable game (see the module docstring) raises BadGamesError naming every one by default,
        so that training never starts on part of a tree unnoticed; with skip_bad=True each is logged as a warning
        and left out.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    unknown = set(task_types or ()) - set(TASK_TYPES)
    if unknown:
        raise ValueError(f"unknown task types {sorted(unknown)}; expected some of {TASK_TYPES}")
    data_dir = _data_dir(root)
    games, bad, skipped = [], [], Counter()
    for s in SPLITS if split is None else (split,):
        if os.path.isdir(os.path.join(data_dir, s)):
            split_games, split_bad = _split_games(os.path.join(data_dir, s), s, task_types or TASK_TYPES, skipped)
            games += split_games
            bad += split_bad
    if skipped:
        logger.info("%s: trials left out by alfworld's rules: %s", data_dir,
                    ", ".join(f"{n} {rule}" for rule, n in sorted(skipped.items())))
    if bad and not skip_bad:
        raise BadGamesError(root, bad)
    for path, reason in bad:
        logger.warning("skipping unplayable game %s: %s", path, reason)
    return games
