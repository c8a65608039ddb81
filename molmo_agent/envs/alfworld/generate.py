"""Generate planner-verified ALFWorld games in the official layout.

    python -m molmo_agent.envs.alfworld.generate --out ROOT --train 1000 --valid-seen 140 --valid-unseen 134

writes ROOT/json_2.1.1/<split>/<task>-<Object>-<MovableRecep>-<Parent>-<scene>/trial_T<seed>_<index>/
{game.tw-pddl, traj_data.json} and ROOT/logic/{alfred.pddl, alfred.twl2}: point ALFWORLD_DATA at ROOT.

ROOT is built whole or not at all: the games go into a sibling folder ROOT.incomplete-*/ whose tree replaces ROOT
only once every game is written and reads back (a failed run removes that folder, a killed one leaves it to delete;
ROOT stays as it was). An --out that already holds files is refused unless --overwrite is given, which replaces the
earlier tree as a whole (seeds are never mixed), and only a folder holding nothing but json_2.1.1/ and logic/. Every
file is written under a temporary name and renamed, so none is ever left truncated. The last line counts the games
per split read back from ROOT.

One game: floor plan of its split -> task of its type (types cycle with the index) -> scene populated around the
task -> PDDL problem -> plan (Fast Downward, on the problem without distractors: they only add branching, never
block an action, since alfred.pddl has no capacity) -> the plan replayed on the full problem by the game engine
-> files. A draw that fails is redrawn. Every game depends only on (seed, split, index), so the output is the
same for any number of workers.
"""
import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable

from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
from tqdm import tqdm

from molmo_agent.envs.alfworld.games import DATA_DIR, GAME_FILE, SPLITS, TASK_TYPES, TRAJ_FILE, Game, load_games
from molmo_agent.envs.alfworld.planner import Planner
from molmo_agent.envs.alfworld.problem import problem_pddl
from molmo_agent.envs.alfworld.scenes import (
    SEEN_FLOOR_PLANS,
    UNSEEN_FLOOR_PLANS,
    Scene,
    load_floor_plan,
    sample_scene,
)
from molmo_agent.envs.alfworld.tasks import Task, candidate_tasks

FLOOR_PLANS = {"train": SEEN_FLOOR_PLANS, "valid_seen": SEEN_FLOOR_PLANS, "valid_unseen": UNSEEN_FLOOR_PLANS}
MAX_DRAWS = 20  # redraws of floor plan / task / scene before a game index is declared impossible
LOGIC_DIR = "logic"
TREE_ENTRIES = {DATA_DIR, LOGIC_DIR}  # all a root of ours holds: what --overwrite may replace


@dataclass(frozen=True)
class GeneratedGame:
    split: str
    directory: str  # relative to ROOT/json_2.1.1/<split>: "<task>-<Obj>-None-<Parent>-<scene>/trial_T<seed>_<index>"
    game: dict  # game.tw-pddl: pddl_domain, grammar, pddl_problem, solvable, walkthrough
    traj_data: dict  # traj_data.json: the fields ALFWorld's tools read


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


_planner: Planner | None = None


def _get_planner() -> Planner:
    global _planner
    if _planner is None:
        _planner = Planner(_read(ALFRED_PDDL_PATH), _read(ALFRED_TWL2_PATH))
    return _planner


def _draw(split: str, task_type: str, rng: random.Random) -> tuple[Task, Scene]:
    while True:
        floor_plan = load_floor_plan(rng.choice(FLOOR_PLANS[split]))
        tasks = candidate_tasks(floor_plan, task_type)
        if tasks:
            task = rng.choice(tasks)
            return task, sample_scene(floor_plan, rng, task.min_counts(), task.forbidden_starts())


def _without_distractors(scene: Scene, task: Task) -> Scene:
    keep = {task.object_target, task.toggle_target}
    return dataclasses.replace(scene, objects=tuple(o for o in scene.objects if o.type in keep))


def generate_game(split: str, index: int, seed: int) -> GeneratedGame:
    """Game `index` of `split`: a deterministic function of (seed, split, index). ValueError if none is found."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    planner = _get_planner()
    rng = random.Random(f"{seed}/{split}/{index}")
    task_type = TASK_TYPES[index % len(TASK_TYPES)]
    trial = f"trial_T{seed}_{index:06d}"
    for _ in range(MAX_DRAWS):
        task, scene = _draw(split, task_type, rng)
        problem = problem_pddl(scene, task, trial)
        plan = planner.solve(problem_pddl(_without_distractors(scene, task), task, trial))
        game_task = plan is not None and planner.replay(problem, plan)
        if game_task:
            break
    else:
        raise ValueError(f"no solvable {task_type} game found for {split} #{index} (seed {seed})")

    description = task.description(rng)
    game = {
        "pddl_domain": planner.domain,
        "grammar": planner.grammar.replace("UNKNOWN GOAL", description),
        "pddl_problem": problem,
        "solvable": True,
        "walkthrough": planner.walkthrough(game_task, plan),
    }
    floor_plan = scene.floor_plan
    traj_data = {
        "task_id": trial,
        "task_type": task.type,
        "pddl_params": task.pddl_params(),
        "scene": {"floor_plan": floor_plan.name, "scene_num": floor_plan.number, "random_seed": seed},
        "turk_annotations": {"anns": [{"task_desc": description, "high_descs": []}]},
        "generator": "molmo_agent.envs.alfworld.generate",
    }
    directory = f"{task.directory_name_prefix}-{floor_plan.number}/{trial}"
    return GeneratedGame(split, directory, game, traj_data)


def _write_atomically(path: str, write: Callable[[str], object]) -> None:
    """Call write(temporary path) and rename its result to `path`: readers see the old file or the whole new one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _write_json(path: str, data: dict, **dump_options) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w") as f:
            json.dump(data, f, **dump_options)

    _write_atomically(path, write)


def write_game(root: str, game: GeneratedGame) -> str:
    """Write one game under ROOT/json_2.1.1; returns the path of its game.tw-pddl."""
    out = os.path.join(root, DATA_DIR, game.split, game.directory)
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, TRAJ_FILE), game.traj_data, indent=2, sort_keys=True)
    path = os.path.join(out, GAME_FILE)
    _write_json(path, game.game)
    return path


def write_logic(root: str) -> None:
    """ROOT/logic/: the domain and grammar alfworld ships, where ALFWorld's configs look for them."""
    os.makedirs(os.path.join(root, LOGIC_DIR), exist_ok=True)
    for source in (ALFRED_PDDL_PATH, ALFRED_TWL2_PATH):
        _write_atomically(os.path.join(root, LOGIC_DIR, os.path.basename(source)), partial(shutil.copyfile, source))


def _generate_and_write(job: tuple[str, int, int, str]) -> str:
    split, index, seed, root = job
    return write_game(root, generate_game(split, index, seed))


def _check_out(root: str, overwrite: bool) -> None:
    """Refuse a ROOT that holds files (without overwrite) or anything a generator root does not (with it)."""
    if not os.path.exists(root):
        return
    if not os.path.isdir(root):
        raise ValueError(f"--out {root} is a file; expected a new or empty folder, or a game tree to --overwrite")
    entries = set(os.listdir(root))
    if entries and not overwrite:
        raise ValueError(f"--out {root} already holds files; --overwrite (overwrite=True) replaces that game tree "
                         "as a whole, or choose a new or empty folder")
    foreign = sorted(entries - TREE_ENTRIES)
    if foreign:
        raise ValueError(f"--out {root} holds {', '.join(foreign)} besides a game tree; --overwrite only replaces a "
                         f"folder holding nothing but {', '.join(sorted(TREE_ENTRIES))}: choose another folder")


def _sibling(root: str, purpose: str) -> str:
    """A new private folder beside ROOT, on its file system so that renames between the two are atomic."""
    return tempfile.mkdtemp(prefix=f"{os.path.basename(root)}.{purpose}-", dir=os.path.dirname(root))


def _swap_in(staging: str, root: str) -> None:
    """Make the complete tree in `staging` ROOT; an earlier ROOT stays whole until the new one is in place."""
    if os.path.isdir(root) and os.listdir(root):
        old = _sibling(root, "old")
        os.replace(root, os.path.join(old, "tree"))
        os.replace(staging, root)
        shutil.rmtree(old)
    else:
        os.replace(staging, root)  # a missing or empty ROOT


def generate(root: str, counts: dict[str, int], seed: int, workers: int, overwrite: bool = False,
             train_start: int = 0) -> list[Game]:
    """Generate counts[split] games per split over `workers` processes into ROOT; the games read back from it.
    The training games are indices train_start onward: a later start makes games disjoint from an earlier tree's.

    ROOT must be missing or empty unless `overwrite`, which replaces a tree of ours as a whole (see the module
    docstring). ROOT changes only once the new tree is complete and reads back as `counts` games per split.
    """
    if any(n < 0 for n in counts.values()) or set(counts) - set(SPLITS):
        raise ValueError(f"counts must map splits {SPLITS} to non-negative numbers, got {counts}")
    if train_start < 0:
        raise ValueError(f"--train-start must be a non-negative game index, got {train_start}")
    _check_out(root, overwrite)
    root = os.path.realpath(root)  # a link to ROOT keeps pointing at the new tree
    os.makedirs(os.path.dirname(root), exist_ok=True)
    incomplete = _sibling(root, "incomplete")
    staging = os.path.join(incomplete, "tree")  # made by mkdir, so it gets the usual permissions, not mkdtemp's
    os.mkdir(staging)
    try:
        write_logic(staging)
        starts = {split: train_start if split == "train" else 0 for split in SPLITS}
        jobs = [(split, i, seed, staging) for split in SPLITS
                for i in range(starts[split], starts[split] + counts.get(split, 0))]
        with tqdm(total=len(jobs), desc="alfworld games", unit="game") as bar, \
                (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
            for _ in pool.map(_generate_and_write, jobs, chunksize=2) if pool else map(_generate_and_write, jobs):
                bar.update()
        games = load_games(staging)
        read_back = Counter(game.split for game in games)
        if any(read_back[split] != counts.get(split, 0) for split in SPLITS):
            raise RuntimeError(f"the games written for --out {root} read back as {dict(read_back)}, not {counts}; "
                               f"{root} is left as it was")
        _swap_in(staging, root)
    finally:
        shutil.rmtree(incomplete)
    return [dataclasses.replace(game, path=os.path.join(root, os.path.relpath(game.path, staging))) for game in games]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True,
                        help="root to write (use it as ALFWORLD_DATA): a new or empty folder, or see --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the game tree already in --out as a whole (never merged with the new games)")
    parser.add_argument("--train", type=int, default=0)
    parser.add_argument("--train-start", type=int, default=0,
                        help="index of the first training game: --train 1000 --train-start 1000 makes 1000 games "
                             "that a tree of --train 1000 (same seed) does not hold")
    parser.add_argument("--valid-seen", type=int, default=0)
    parser.add_argument("--valid-unseen", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    args = parser.parse_args(argv)
    counts = {"train": args.train, "valid_seen": args.valid_seen, "valid_unseen": args.valid_unseen}
    start = time.perf_counter()
    try:
        games = generate(args.out, counts, args.seed, args.workers, args.overwrite, args.train_start)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    on_disk = Counter(game.split for game in games)
    print(f"{args.out} holds {len(games)} games ({', '.join(f'{split} {on_disk[split]}' for split in SPLITS)}), "
          f"written in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
