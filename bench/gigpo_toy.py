"""GiGPO vs GRPO on a corridor with dead ends: episodes until the policy succeeds 90 % of the time.

The corridor has `length` cells. In each cell one of `actions` actions (fixed at random per seed) moves forward;
every other action leads into that cell's dead end, from where any action leads back. Reaching the end of the
corridor within `horizon` steps pays `win_reward` on that step; nothing else pays. So the reward is delayed, the
dead-end steps do not matter, and only the choice in each cell does — the credit-assignment problem GiGPO's step
groups address: every trajectory of a group passes through the same cells, and a cell's visits whose discounted
return is higher took the forward action sooner.

A tabular softmax policy is trained by policy gradient on groups of trajectories with
    GRPO:  A = A_E                    (compute_gigpo_advantages with step_advantage_w = 0)
    GiGPO: A = A_E + ω·A_S            (ω = 1)
for each mode and each learning rate of a sweep (GiGPO's extra term also enlarges the update, so the fair
comparison is each method at its best learning rate), from the same seeds. After every update the policy's exact
success probability within the horizon is computed by dynamic programming; the count of episodes sampled until it
reaches 90 % is reported per seed (runs that do not get there are counted at the budget and flagged). Results: bench/results/gigpo_toy_<machine>.json.
With --cross-steps both take A_E's group statistics over step samples (`compute_mean_std_cross_steps`): a failed
trajectory runs to the horizon, a won one stops at the goal, so the two ways weigh them differently.

    python bench/gigpo_toy.py --machine cpu2
    python bench/gigpo_toy.py --machine cpu2_cross_steps --cross-steps
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molmo_agent.algorithms.gigpo import compute_gigpo_advantages

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Corridor:
    """States 0..L-1 are the cells, L..2L-1 their dead ends, 2L the goal (absorbing)."""

    length: int
    actions: int
    forward: np.ndarray  # (L,) the forward action of each cell

    @property
    def num_states(self) -> int:
        return 2 * self.length + 1

    def step(self, state: int, action: int) -> int:
        if state >= self.length:  # a dead end: every action leads back to its cell
            return state - self.length
        if action != self.forward[state]:
            return state + self.length
        return state + 1 if state + 1 < self.length else 2 * self.length

    def observation(self, state: int) -> str:
        return f"cell {state}" if state < self.length else f"dead end off cell {state - self.length}"


def corridor(args: argparse.Namespace, seed: int) -> Corridor:
    """The seed's corridor: its forward actions are drawn from a stream apart from the training's."""
    forward = np.random.default_rng(10_000 + seed).integers(args.actions, size=args.length)
    return Corridor(args.length, args.actions, forward)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def success_probability(env: Corridor, policy: np.ndarray, horizon: int) -> float:
    """P(goal within `horizon` steps) under `policy` (S, A), by propagating the state distribution."""
    transition = np.zeros((env.num_states, env.num_states))
    for s in range(env.num_states - 1):
        for a in range(env.actions):
            transition[s, env.step(s, a)] += policy[s, a]
    transition[-1, -1] = 1.0
    p = np.zeros(env.num_states)
    p[0] = 1.0
    for _ in range(horizon):
        p = p @ transition
    return float(p[-1])


def rollout_group(env: Corridor, policy: np.ndarray, group: int, group_size: int, horizon: int, win_reward: float,
                  rng: np.random.Generator) -> dict:
    """`group_size` trajectories from cell 0, as step-sample columns (plus the state/action for the update)."""
    cols = {k: [] for k in ("group_ids", "traj_ids", "step_ids", "anchors", "env_rewards", "valid", "s", "a")}
    for traj in range(group_size):
        state = 0
        for t in range(horizon):
            action = int(rng.choice(env.actions, p=policy[state]))
            nxt = env.step(state, action)
            for key, value in (("group_ids", group), ("traj_ids", traj), ("step_ids", t), ("s", state),
                               ("anchors", env.observation(state)), ("a", action), ("valid", True),
                               ("env_rewards", win_reward if nxt == 2 * env.length else 0.0)):
                cols[key].append(value)
            state = nxt
            if state == 2 * env.length:
                break
    return cols


def train(env: Corridor, args: argparse.Namespace, lr: float, step_advantage_w: float, mode: str, seed: int) -> dict:
    """Policy gradient until the success probability reaches the target; returns episodes used."""
    rng = np.random.default_rng(seed)
    logits = np.zeros((env.num_states, env.actions))
    episodes = 0
    while episodes < args.episode_budget:
        policy = softmax(logits)
        batch = {k: [] for k in ("group_ids", "traj_ids", "step_ids", "anchors", "env_rewards", "valid", "s", "a")}
        for group in range(args.groups):
            for key, values in rollout_group(env, policy, group, args.group_size, args.horizon, args.win_reward,
                                             rng).items():
                batch[key].extend(values)
        episodes += args.groups * args.group_size
        advantages = compute_gigpo_advantages(
            batch["group_ids"], batch["traj_ids"], batch["step_ids"], batch["anchors"], batch["env_rewards"],
            batch["valid"], gamma=args.gamma, step_advantage_w=step_advantage_w, mode=mode,
            compute_mean_std_cross_steps=args.cross_steps).advantages
        # ∇ log π(a|s) of a softmax table is onehot(a) - π(s); one gradient per step sample, mean over episodes.
        s, a = np.array(batch["s"]), np.array(batch["a"])
        grad = -policy[s] * advantages[:, None]
        grad[np.arange(len(a)), a] += advantages
        np.add.at(logits, s, lr * grad / (args.groups * args.group_size))
        if success_probability(env, softmax(logits), args.horizon) >= args.target:
            return {"episodes": episodes, "reached": True}
    return {"episodes": episodes, "reached": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="cpu2")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--actions", type=int, default=4)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--win-reward", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--episode-budget", type=int, default=20_000)
    parser.add_argument("--modes", nargs="+", default=["mean_norm", "mean_std_norm"])
    parser.add_argument("--cross-steps", action="store_true",
                        help="A_E's group mean and std over step samples instead of trajectories")
    args = parser.parse_args()

    start = time.perf_counter()
    runs, summary = {}, {}
    for mode in args.modes:
        mean_episodes = {"grpo": {}, "gigpo": {}}
        for lr in args.lrs:
            for name, weight in (("grpo", 0.0), ("gigpo", 1.0)):
                key = f"{name}/{mode}/lr={lr:g}"
                runs[key] = [train(corridor(args, seed), args, lr, weight, mode, seed) for seed in range(args.seeds)]
                episodes = [r["episodes"] for r in runs[key]]
                mean_episodes[name][lr] = float(np.mean(episodes))
                late = sum(not r["reached"] for r in runs[key])
                print(f"{key:28s} episodes to {args.target:.0%}: mean {np.mean(episodes):7.0f} "
                      f"median {np.median(episodes):7.0f}" + (f"  ({late} seeds hit the budget)" if late else ""))
        best = {name: min(by_lr, key=by_lr.get) for name, by_lr in mean_episodes.items()}
        summary[mode] = {
            "gigpo_over_grpo_same_lr": {f"{lr:g}": mean_episodes["gigpo"][lr] / mean_episodes["grpo"][lr]
                                        for lr in args.lrs},
            "best_lr": {name: best[name] for name in best},
            "gigpo_over_grpo_each_at_best_lr":
                mean_episodes["gigpo"][best["gigpo"]] / mean_episodes["grpo"][best["grpo"]],
        }
        same = ", ".join(f"lr {lr}: {ratio:.2f}" for lr, ratio in summary[mode]["gigpo_over_grpo_same_lr"].items())
        print(f"{mode}: GiGPO / GRPO mean episodes at the same lr — {same}; each at its best lr "
              f"({best['gigpo']:g} vs {best['grpo']:g}): {summary[mode]['gigpo_over_grpo_each_at_best_lr']:.2f} "
              "(goal <= 0.70)")

    result = {
        "bench": "gigpo_toy",
        "command": "python " + " ".join([f"bench/{Path(__file__).name}", *sys.argv[1:]]),
        "parameters": vars(args),
        "summary": summary,
        "runs": runs,
        "goal_ratio": 0.7,
        "seconds": time.perf_counter() - start,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    out = ROOT / "bench" / "results" / f"gigpo_toy_{args.machine}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
