"""Generate planner-verified ALFWorld games in the official layout.

    python -m molmo_agent.envs.alfworld.generate --out ROOT --train 1000 --valid-seen 140 --valid-unseen 134

writes ROOT/json_2.1.1/<split>/<task>-<Object>-<MovableRecep>-<Parent>-<scene>/trial_T<seed>_<index>/
{game.tw-pddl, traj_data.json} and ROOT/logic/{alfred.pddl, alfred.twl2}: point ALFWORLD_DATA at ROOT.

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
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
from tqdm import tqdm

from molmo_agent.envs.alfworld.games import DATA_DIR, GAME_FILE, SPLITS, TASK_TYPES, TRAJ_FILE
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


def write_game(root: str, game: GeneratedGame) -> str:
    """Write one game under ROOT/json_2.1.1; returns the path of its game.tw-pddl."""
    out = os.path.join(root, DATA_DIR, game.split, game.directory)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, TRAJ_FILE), "w") as f:
        json.dump(game.traj_data, f, indent=2, sort_keys=True)
    path = os.path.join(out, GAME_FILE)
    with open(path, "w") as f:
        json.dump(game.game, f)
    return path


def write_logic(root: str) -> None:
    """ROOT/logic/: the domain and grammar alfworld ships, where ALFWorld's configs look for them."""
    os.makedirs(os.path.join(root, "logic"), exist_ok=True)
    for path in (ALFRED_PDDL_PATH, ALFRED_TWL2_PATH):
        shutil.copyfile(path, os.path.join(root, "logic", os.path.basename(path)))


def _generate_and_write(job: tuple[str, int, int, str]) -> str:
    split, index, seed, root = job
    return write_game(root, generate_game(split, index, seed))


def generate(root: str, counts: dict[str, int], seed: int, workers: int) -> list[str]:
    """Generate and write counts[split] games per split over `workers` processes; the game.tw-pddl paths."""
    if any(n < 0 for n in counts.values()) or set(counts) - set(SPLITS):
        raise ValueError(f"counts must map splits {SPLITS} to non-negative numbers, got {counts}")
    write_logic(root)
    jobs = [(split, i, seed, root) for split in SPLITS for i in range(counts.get(split, 0))]
    with tqdm(total=len(jobs), desc="alfworld games", unit="game") as bar, \
            (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        results = pool.map(_generate_and_write, jobs, chunksize=2) if pool else map(_generate_and_write, jobs)
        paths = []
        for path in results:
            paths.append(path)
            bar.update()
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="root to write (use it as ALFWORLD_DATA)")
    parser.add_argument("--train", type=int, default=0)
    parser.add_argument("--valid-seen", type=int, default=0)
    parser.add_argument("--valid-unseen", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    args = parser.parse_args(argv)
    counts = {"train": args.train, "valid_seen": args.valid_seen, "valid_unseen": args.valid_unseen}
    start = time.perf_counter()
    paths = generate(args.out, counts, args.seed, args.workers)
    print(f"wrote {len(paths)} games to {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
