"""Environment steps per second with 64 ALFWorld games in parallel: our SessionPool against alfworld's own
batched TextWorld env (AlfredTWEnv.init_env: textworld.gym's batch env, one process per game), side by side on
the same games and the same actions.

    python bench/alfworld_env.py --games GAMES_ROOT [--batch 64] [--steps 30] [--out bench/results/alfworld_env_cpu2.json]

GAMES_ROOT holds games in ALFWorld's layout (<task folder>/<trial>/game.tw-pddl + traj_data.json); alfworld's
loader is pointed at it through a config dict. Both sides first start their workers (not timed), then time one
reset of all games (loading them) and `--steps` lock-step steps. Our workers memoize TextWorld's grammar parsing
(`grammar_cache`) and Fast Downward's translation of each game (`translation_cache`: a first load and reset
translate twice, not four times); alfworld's workers run the engine as shipped. The actions: per game, a fixed
sequence of random admissible commands that cannot win (no put or use), so every game steps `--steps` times on
both sides.

alfworld is measured in two configurations:
- `dagger`: the config verl-agent ships for ALFWorld (alfworld's base config: training_method dagger, expert
  handcoded), which with alfworld 0.4.2 adds the hand-coded expert and per-step facts to every step;
- `dqn`: alfworld's lightest training config (won, admissible commands and game file only), i.e. the same
  engine work per step as ours.
"""
import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import platform
import random
import shlex
import sys
import time

from molmo_agent.envs.alfworld import grammar_cache, translation_cache
from molmo_agent.envs.alfworld.play import find_game_files
from molmo_agent.envs.alfworld.session import AlfworldSession
from molmo_agent.envs.base import INFO_ADMISSIBLE
from molmo_agent.envs.pool import SessionPool


# Every ALFWorld goal is reached by putting something somewhere or by using a lamp; plans without these
# commands never end an episode early.
FINISHING_VERBS = ("move ", "use ")


def action_plans(games: list[str], steps: int, seed: int) -> dict[str, list[str]]:
    """Per game, `steps` random admissible commands (seeded), none of which can win."""
    session = AlfworldSession()
    plans = {}
    for game in games:
        rng = random.Random(f"{seed}:{game}")
        _, info = session.reset(options={"game": game})
        plan = []
        for _ in range(steps):
            plan.append(rng.choice([c for c in info[INFO_ADMISSIBLE] if not c.startswith(FINISHING_VERBS)]))
            _, _, terminated, _, info = session.step(plan[-1])
            assert not terminated, f"{plan[-1]!r} won {game}"
        plans[game] = plan
    return plans


def alfworld_config(root: str, mode: str, max_steps: int) -> dict:
    """The parts of alfworld's base config that AlfredTWEnv reads, pointed at `root`."""
    return {
        "dataset": {"data_path": root, "num_train_games": -1},
        "env": {
            "task_types": [1, 2, 3, 4, 5, 6],
            "domain_randomization": False,
            "goal_desc_human_anns_prob": 0.0,
            "expert_type": "handcoded",
        },
        "general": {"training_method": mode},
        "rl": {"training": {"max_nb_steps_per_episode": max_steps}},
        "dagger": {"training": {"max_nb_steps_per_episode": max_steps}},
    }


def bench_alfworld(root: str, mode: str, batch: int, plans: dict[str, list[str]], steps: int) -> dict:
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    start = time.perf_counter()
    env = AlfredTWEnv(alfworld_config(root, mode, max_steps=steps + 10), train_eval="train").init_env(batch)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    _, infos = env.reset()
    reset = time.perf_counter() - start
    slot_games = [os.path.realpath(g) for g in infos["extra.gamefile"]]
    start = time.perf_counter()
    for t in range(steps):
        _, _, dones, _ = env.step([plans[g][t] for g in slot_games])
        assert not any(dones), "a plan ended an episode early"
    step = time.perf_counter() - start
    env.close()
    return {"startup_s": startup, "reset_s": reset, "step_s": step, "slot_games": slot_games}


def bench_ours(slot_games: list[str], plans: dict[str, list[str]], steps: int, workers: int) -> dict:
    async def run(pool: SessionPool) -> dict:
        start = time.perf_counter()
        await asyncio.gather(*(pool.worker_pid(w) for w in range(workers)))  # workers up and imported
        startup = time.perf_counter() - start
        start = time.perf_counter()
        resets = await asyncio.gather(*(pool.reset(s, {"game": g}) for s, g in enumerate(slot_games)))
        reset = time.perf_counter() - start
        assert not any(info.get("failed") for _, info in resets)
        start = time.perf_counter()
        for t in range(steps):
            results = await pool.step_batch([plans[g][t] for g in slot_games])
            assert not any(r[2] or r[3] for r in results), "a plan ended an episode early"
        step = time.perf_counter() - start
        return {"startup_s": startup, "reset_s": reset, "step_s": step}

    with SessionPool(len(slot_games), env_factory=AlfworldSession, num_workers=workers, use_ray=False) as pool:
        return asyncio.run(run(pool))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", required=True, help="root of games in ALFWorld's layout")
    parser.add_argument("--batch", type=int, default=64, help="games played in parallel")
    parser.add_argument("--steps", type=int, default=30, help="steps per game (timed)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="our pool's worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results here (JSON)")
    parser.add_argument("--note", default="", help="stored with the results (e.g. how the games were made)")
    args = parser.parse_args()

    games = [os.path.realpath(g) for g in find_game_files(args.games)]
    if len(games) < args.batch:
        raise SystemExit(f"need >= {args.batch} games under {args.games}, found {len(games)}")
    print(f"{len(games)} games; making action plans of {args.steps} steps ...", flush=True)
    # In a separate process: our sessions memoize TextWorld's grammar and Fast Downward's translation
    # process-wide, and alfworld's batch env forks its workers from this process, which must keep the plain engine.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        plans = executor.submit(action_plans, games, args.steps, args.seed).result()
    assert not grammar_cache.installed() and not translation_cache.installed()

    results = {}
    for mode in ("dagger", "dqn"):
        print(f"alfworld AlfredTWEnv ({mode}), batch {args.batch} ...", flush=True)
        results[f"alfworld_{mode}"] = bench_alfworld(args.games, mode, args.batch, plans, args.steps)
        results[f"alfworld_{mode}"]["load_average_1min_after"] = os.getloadavg()[0]
    slot_games = results["alfworld_dagger"].pop("slot_games")
    results["alfworld_dqn"].pop("slot_games")
    print(f"ours: SessionPool, {args.workers} worker processes ...", flush=True)
    results["ours"] = bench_ours(slot_games, plans, args.steps, args.workers)
    # The machine may be shared: a load far above the core count slows every side, not the ratio much.
    results["ours"]["load_average_1min_after"] = os.getloadavg()[0]

    total_steps = args.batch * args.steps
    for name, r in results.items():
        r["steps_per_s"] = total_steps / r["step_s"]
        print(f"{name:16s} startup {r['startup_s']:6.2f} s  reset {r['reset_s']:6.2f} s  "
              f"steps {r['step_s']:6.2f} s  -> {r['steps_per_s']:7.1f} steps/s")
    ratios = {f"ours_vs_alfworld_{m}": results["ours"]["steps_per_s"] / results[f"alfworld_{m}"]["steps_per_s"]
              for m in ("dagger", "dqn")}
    ratios.update({f"reset_ours_vs_alfworld_{m}": results[f"alfworld_{m}"]["reset_s"] / results["ours"]["reset_s"]
                   for m in ("dagger", "dqn")})
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x")
    if args.out:
        record = {
            "command": shlex.join(["python"] + sys.argv),
            "params": vars(args),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "games": len(games),
            "note": args.note,
            "results": results,
            "ratios": ratios,
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
