"""Learning curves of GiGPO and GRPO runs from one SFT checkpoint, read from their console logs, as JSON and a plot.

    python bench/learning.py --gpu h200 --work WORK --train-batch B --group-size G ... \
        gigpo:0:WORK/runs/gigpo_seed0/train.log grpo:0:WORK/runs/grpo_seed0/train.log ...

Each run is ESTIMATOR:SEED:LOG, given once per machine it ran on (its sessions' logs in order, each resuming where
the one before stopped; a session that trains an iteration again is refused). A run validates before its first
update (iteration 0: the SFT level) and every `trainer.test_freq` iterations (`eval_report.validation_points`);
each validation is a curve point. Environment steps are the agent actions of the training rollouts up to and
including that iteration, as our trainer logs them with every validation (`env/cumulative_steps`, one per step
sample, kept in its checkpoints across resumes). A dropped episode (its environment failed) leaves no step sample,
so its actions cannot be counted; validation episodes are not counted. `episodes` counts every session started, B x
G per iteration.

The comparison is read at the last validation of each run at or below the largest environment-step count every
run reached (a run reaches the steps of its last logged iteration, validated or not; never a curve's best
point): GiGPO minus GRPO valid_unseen success, the mean over seeds of the difference paired by seed, with a 95 %
bootstrap interval. Given each run's validation episodes
(`--episodes ESTIMATOR:SEED:FILE`, from `molmo_agent.integrations.verl.validation_dump`, several files of a run's
sessions merged) and the game tree (`--games`), the interval is a paired bootstrap over games and seeds: an
episode's opening prompt names its game (the game's task and first room description, read by resetting each
validation game; games that open alike form one unit, their episodes averaged), and each resample draws seeds and
valid_unseen games with replacement and averages GiGPO's outcome minus GRPO's on the same game and seed. Without
them it resamples seeds only. A run compared at iteration 0 (untrained) is named in a warning. Without a seed that
has runs of both estimators the comparison is null. `lift` reads each estimator alone at the same point: its success
minus the SFT level (a seed's mean iteration-0 validation), per split and seed, with a bootstrap interval on
valid_unseen (over games and seeds, each game against its own iteration-0 outcome, when the episodes are given).

`training_comparison` adds the training rollouts' view: a seed's two runs play the same games in each iteration,
so GiGPO minus GRPO training success pairs by iteration (a third panel of the plot). `training_windows` averages
each run's training success over iterations 1-4, 5-8 and 9-12: on fresh games (RL_GAMES=fresh) a later window above
the first is transfer to games never played, readable from one estimator's seeds alone. Writes
OUT_DIR/learning_<gpu>.json and .png, and with --table a text file of each run's per-iteration metrics (training
and validation success, step size, entropy, where the advantage mass sits, stage seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from molmo_agent.integrations.verl.eval_report import logged_steps, read_console_log, validation_points
from molmo_agent.integrations.verl.validation_dump import read_episodes
from molmo_agent.models.checkpoint_parts import WEIGHTS, read_sums, weights_sha256

SPLITS = ("valid_seen", "valid_unseen")
ESTIMATORS = ("gigpo", "grpo")
BOOTSTRAP_SAMPLES = 10_000
FIRST_TRAINED_ITERATION = 2  # iteration 1's rollouts come from the SFT weights: the first to follow an update
TRAINING_WINDOWS = ((1, 4), (5, 8), (9, 12))  # iterations whose training success is averaged (training_windows)


def learning_curve(log: str, episodes_per_iteration: int) -> list[dict[str, Any]]:
    """One point per validation of `log`: {"iteration", "env_steps", "episodes", "train_success",
    "train_success_mean", "valid_seen", "valid_unseen", "by_task_type"}: train_success is that iteration's,
    train_success_mean the mean over the iterations since the previous validation (both None at iteration 0, which
    trained nothing), by_task_type each split's success per task type ({} where the log has none)."""
    steps = logged_steps(log)
    validations = validation_points(log)
    if 0 not in validations:
        raise ValueError("the log has no validation before training (step 0): run with trainer.val_before_train=True")
    curve, previous = [], 0
    for iteration in sorted(validations):
        metrics = steps[iteration]
        if "env/cumulative_steps" not in metrics:
            raise ValueError(f"iteration {iteration}'s validation logged no env/cumulative_steps (a log from before "
                             "our trainer counted them): environment steps unknown")
        missing = [split for split in SPLITS if split not in validations[iteration]]
        if missing:
            raise ValueError(f"iteration {iteration}'s validation has no success for {missing}")
        window = [steps[i]["env/success_rate"] for i in range(previous + 1, iteration + 1)
                  if "env/success_rate" in steps.get(i, {})]
        curve.append({"iteration": iteration, "env_steps": int(metrics["env/cumulative_steps"]),
                      "episodes": iteration * episodes_per_iteration,
                      "train_success": metrics.get("env/success_rate") if iteration > 0 else None,
                      "train_success_mean": float(np.mean(window)) if window else None,
                      **{split: validations[iteration][split]["success"] for split in SPLITS},
                      "by_task_type": {split: validations[iteration][split]["success_by_task_type"]
                                       for split in SPLITS}})
        previous = iteration
    return curve


def training_success(log: str) -> list[dict[str, Any]]:
    """One point per training iteration of `log`: {"iteration", "env_steps", "success"}, the success of that
    iteration's rollouts (`env/success_rate`, at the training temperature)."""
    return [{"iteration": iteration, "env_steps": int(metrics["env/cumulative_steps"]),
             "success": metrics["env/success_rate"]}
            for iteration, metrics in sorted(logged_steps(log).items())
            if iteration > 0 and "env/success_rate" in metrics and "env/cumulative_steps" in metrics]


# (column, verl's metric, format) of the per-iteration table: training rollouts, validation, the update's step
# size and drift, where the advantage mass sits, and each stage's seconds
TABLE_COLUMNS = (
    ("succ", "env/success_rate", ".3f"), ("ep.len", "env/episode_length", ".1f"),
    ("env steps", "env/cumulative_steps", ".0f"), ("vs", "val-core/alfworld/valid_seen/acc/mean@1", ".2f"),
    ("vu", "val-core/alfworld/valid_unseen/acc/mean@1", ".2f"), ("ppo_kl", "actor/ppo_kl", ".3f"),
    ("clipfrac", "actor/pg_clipfrac", ".3f"), ("kl_loss", "actor/kl_loss", ".3f"),
    ("entropy", "actor/entropy", ".3f"), ("invalid", "env/invalid_action_rate", ".4f"),
    ("inadm.", "env/inadmissible_action_rate", ".3f"),
    ("no-win g", "advantage/no_success_group_share", ".3f"),
    ("no-win |A|", "advantage/no_success_abs_share", ".3f"), ("neg |A|", "advantage/negative_abs_share", ".3f"),
    ("step s", "timing_s/step", ".0f"), ("gen", "timing_s/gen", ".0f"), ("old-lp", "timing_s/old_log_prob", ".0f"),
    ("ref", "timing_s/ref", ".0f"), ("update", "timing_s/update_actor", ".0f"))


def iteration_table(log: str) -> str:
    """One row per logged iteration of `log` (iteration 0: the validation before training), a column per
    TABLE_COLUMNS metric, `-` where the iteration did not log it."""
    width = max(len(name) for name, _, _ in TABLE_COLUMNS) + 2
    lines = ["it".rjust(4) + "".join(name.rjust(width) for name, _, _ in TABLE_COLUMNS)]
    for iteration, metrics in sorted(logged_steps(log).items()):
        lines.append(str(iteration).rjust(4) + "".join(
            (format(metrics[key], spec) if key in metrics else "-").rjust(width) for _, key, spec in TABLE_COLUMNS))
    return "\n".join(lines)


def env_steps_reached(log: str) -> int:
    """The environment steps of the last iteration `log` holds, whether or not it validated there."""
    return max((int(metrics["env/cumulative_steps"]) for metrics in logged_steps(log).values()
                if "env/cumulative_steps" in metrics), default=0)


def point_at(curve: list[dict[str, Any]], env_steps: float) -> dict[str, Any]:
    """The last point of `curve` at or below `env_steps`."""
    return [point for point in curve if point["env_steps"] <= env_steps][-1]


def opening_games(games_root: Path, split: str) -> dict[tuple[str, str], str]:
    """(task, room description) of each game of `split` at its start -> the game's path: what an episode's
    opening prompt shows of its game. Games that open alike cannot be told apart by their episodes: they form one
    unit, named by their paths joined with " | " (2 of the 50 valid_unseen games of the recipe's seed 0)."""
    from molmo_agent.envs.alfworld.games import load_games
    from molmo_agent.envs.alfworld.session import AlfworldSession
    from molmo_agent.envs.base import INFO_TASK

    session, paths = AlfworldSession(), defaultdict(list)
    for game in load_games(str(games_root), split):
        room, info = session.reset(options={"game": game})
        paths[info[INFO_TASK], room].append(game.path)
    return {opening: " | ".join(sorted(games)) for opening, games in paths.items()}


def game_outcomes(episodes: list[dict[str, Any]],
                  openings: dict[tuple[str, str], str]) -> dict[int, dict[str, float]]:
    """{validation step: {game (or unit of games that open alike): success, averaged over the unit's episodes}}
    of the episodes whose opening prompt shows one of `openings`; an episode matching two openings raises
    ValueError (it could not be paired)."""
    played: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for episode in episodes:
        prompt = episode["opening_prompt"]
        games = {unit for (task, room), unit in openings.items() if task in prompt and room in prompt}
        if len(games) > 1:
            raise ValueError(f"step {episode['step']}: an opening prompt shows {len(games)} games: {sorted(games)}")
        if games:
            played[episode["step"]][games.pop()].append(float(episode["acc"]))
    return {step: {unit: float(np.mean(outcomes)) for unit, outcomes in units.items()}
            for step, units in played.items()}


def paired_seeds(keys) -> list[int]:
    """The seeds that have both a GiGPO and a GRPO run, of (estimator, seed) `keys`."""
    return sorted({seed for estimator, seed in keys if estimator == "gigpo"} &
                  {seed for estimator, seed in keys if estimator == "grpo"})


def bootstrap_over_units(differences: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of `differences` [units] over BOOTSTRAP_SAMPLES resamples of the units with replacement."""
    return differences[rng.integers(0, len(differences), size=(BOOTSTRAP_SAMPLES, len(differences)))].mean(axis=1)


def ci95(resampled: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles of bootstrap means."""
    return [float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5))]


def bootstrap_over_games_and_seeds(differences: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of `differences` [seeds, games] (GiGPO minus GRPO, paired by seed and game) over BOOTSTRAP_SAMPLES
    resamples that draw seeds and games with replacement, the same games for every seed -> [BOOTSTRAP_SAMPLES]."""
    n_seeds, n_games = differences.shape
    seeds = rng.integers(0, n_seeds, size=(BOOTSTRAP_SAMPLES, n_seeds))
    games = rng.integers(0, n_games, size=(BOOTSTRAP_SAMPLES, n_games))
    # [samples, seeds, games]: row s of each resample, then its drawn games
    return differences[seeds[:, :, None], games[:, None, :]].mean(axis=(1, 2))


def compared_points(runs: list[dict[str, Any]]) -> tuple[int, dict[tuple[str, int], dict[str, Any]]]:
    """The largest environment-step count every run reached, and each run's last curve point at or below it,
    by (estimator, seed)."""
    common = min(run["env_steps_reached"] for run in runs)
    return common, {(run["estimator"], run["seed"]): point_at(run["curve"], common) for run in runs}


def sft_level(runs: list[dict[str, Any]], seed: int, split: str) -> float:
    """A seed's SFT level on `split`: the mean iteration-0 validation of its runs. The runs of a seed start from one
    SFT checkpoint, so this is one baseline for each of them (two evaluations of one policy differ by sampling
    noise alone)."""
    return float(np.mean([run["curve"][0][split] for run in runs if run["seed"] == seed]))


def lift(runs: list[dict[str, Any]],
         outcomes: dict[tuple[str, int], dict[int, dict[str, float]]] | None = None,
         rng_seed: int = 0) -> dict[str, Any]:
    """Each estimator's lift: success at the last validation at or below the environment steps every run reached,
    minus its seed's `sft_level`, per split and seed, and the mean over seeds. On valid_unseen a 95 % bootstrap
    interval: over games and seeds when `outcomes` holds the episodes of each of the estimator's runs at iteration 0
    and at the compared iteration (a game's level is its iteration-0 outcome averaged over the seed's runs), else
    over seeds."""
    common, at = compared_points(runs)
    rng = np.random.default_rng(rng_seed)
    result: dict[str, Any] = {"env_steps": common,
                              "iterations": {f"{e}_seed{s}": point["iteration"] for (e, s), point in at.items()}}
    for estimator in sorted({e for e, _ in at}):
        seeds = sorted(s for e, s in at if e == estimator)
        by_seed = {split: {s: at[estimator, s][split] - sft_level(runs, s, split) for s in seeds} for split in SPLITS}
        entry: dict[str, Any] = {split: float(np.mean(list(by_seed[split].values()))) for split in SPLITS}
        entry["seeds"] = {str(s): {split: by_seed[split][s] for split in SPLITS} for s in seeds}
        by_game = _lift_by_game(runs, at, estimator, seeds, outcomes or {})
        if by_game is not None:
            entry["ci95"] = ci95(bootstrap_over_games_and_seeds(by_game, rng))
            entry["bootstrap"] = f"over games and seeds ({by_game.shape[1]} valid_unseen games x {len(seeds)} seeds)"
        else:
            entry["ci95"] = ci95(bootstrap_over_units(np.array(list(by_seed["valid_unseen"].values())), rng))
            entry["bootstrap"] = "over seeds (no validation episodes given: games cannot be resampled)"
        result[estimator] = entry
    return result


def _lift_by_game(runs: list[dict[str, Any]], at: dict[tuple[str, int], dict[str, Any]], estimator: str,
                  seeds: list[int],
                  outcomes: dict[tuple[str, int], dict[int, dict[str, float]]]) -> np.ndarray | None:
    """[seeds, games] valid_unseen outcome at the compared iteration minus the game's SFT level, over the games every
    needed validation played; None when some run's episodes at iteration 0 or the compared iteration are missing."""
    same_seed = {s: [(run["estimator"], s) for run in runs if run["seed"] == s] for s in seeds}
    needed = [(key, 0) for s in seeds for key in same_seed[s]] + [((estimator, s), at[estimator, s]["iteration"])
                                                                  for s in seeds]
    if not all(step in outcomes.get(key, {}) for key, step in needed):
        return None
    games = sorted(set.intersection(*(set(outcomes[key][step]) for key, step in needed)))
    if not games:
        raise ValueError(f"{estimator}'s validation episodes share no valid_unseen game at iteration 0 and the "
                         f"compared iterations")
    return np.array([[outcomes[estimator, s][at[estimator, s]["iteration"]][g]
                      - np.mean([outcomes[key][0][g] for key in same_seed[s]]) for g in games] for s in seeds])


def comparison(runs: list[dict[str, Any]],
               outcomes: dict[tuple[str, int], dict[int, dict[str, float]]] | None = None,
               rng_seed: int = 0) -> dict[str, Any] | None:
    """GiGPO minus GRPO valid_unseen success at the last validation at or below the largest environment-step count
    every run reached (each run's `env_steps_reached`), paired by seed, with a 95 % bootstrap interval: over games
    and seeds when `outcomes` ({(estimator, seed): game_outcomes of its valid_unseen episodes}) holds every run,
    else over seeds (each estimator's lift at the same points is `lift`'s). None when no seed has runs of both
    estimators."""
    common, at = compared_points(runs)
    seeds = paired_seeds(at)
    if not seeds:
        return None
    differences = np.array([at["gigpo", s]["valid_unseen"] - at["grpo", s]["valid_unseen"] for s in seeds])
    rng = np.random.default_rng(rng_seed)
    if outcomes is not None and all((e, s) in outcomes for e in ESTIMATORS for s in seeds):
        played = {(e, s): outcomes[e, s].get(at[e, s]["iteration"], {}) for e in ESTIMATORS for s in seeds}
        games = sorted(set.intersection(*(set(p) for p in played.values())))
        if not games:
            raise ValueError("the runs' validation episodes share no valid_unseen game at the compared iterations")
        by_game = np.array([[played["gigpo", s][g] - played["grpo", s][g] for g in games] for s in seeds])
        differences = by_game.mean(axis=1)  # the games every run played (an environment failure drops one)
        resampled = bootstrap_over_games_and_seeds(by_game, rng)
        bootstrap = f"paired over games and seeds ({len(games)} valid_unseen games x {len(seeds)} seeds)"
    else:
        resampled = bootstrap_over_units(differences, rng)
        bootstrap = "over seeds, paired by seed (no validation episodes given: games cannot be resampled)"
    return {"env_steps": common, "seeds": seeds,
            "iterations": {f"{estimator}_seed{seed}": point["iteration"] for (estimator, seed), point in at.items()},
            "gigpo_minus_grpo_valid_unseen": float(differences.mean()),
            "ci95": ci95(resampled),
            "bootstrap": bootstrap}


def training_comparison(runs: list[dict[str, Any]], rng_seed: int = 0) -> dict[str, Any] | None:
    """GiGPO minus GRPO training success, paired by seed and iteration: a seed's two runs play the same games in
    each iteration (`data.seed`), so each iteration both trained after is a pair (from iteration 2: iteration 1's
    rollouts come from the SFT weights in both). Mean difference, how many pairs GiGPO was at or above GRPO, and a
    95 % bootstrap interval that resamples the pairs (iterations of one run are treated as independent units,
    which they are not quite: the policy carries over). Beside it, the control: each seed's difference in the
    iteration before any update, where both runs sample the same weights on the same games, so that it is
    sampling noise alone. None without a pair."""
    training = {(run["estimator"], run["seed"]): {p["iteration"]: p["success"] for p in run["training"]}
                for run in runs}
    differences = np.array([training["gigpo", seed][i] - training["grpo", seed][i]
                            for seed in paired_seeds(training)
                            for i in sorted(training["gigpo", seed].keys() & training["grpo", seed].keys())
                            if i >= FIRST_TRAINED_ITERATION])
    if not len(differences):
        return None
    before = FIRST_TRAINED_ITERATION - 1  # rolled out by the SFT weights in both runs
    same_weights = {}
    for seed in paired_seeds(training):
        gigpo, grpo = training["gigpo", seed], training["grpo", seed]
        if before in gigpo and before in grpo:
            same_weights[str(seed)] = gigpo[before] - grpo[before]
    return {"pairs": len(differences), "from_iteration": FIRST_TRAINED_ITERATION,
            "gigpo_minus_grpo": float(differences.mean()), "gigpo_at_or_above": int((differences >= 0).sum()),
            "ci95": ci95(bootstrap_over_units(differences, np.random.default_rng(rng_seed))),
            "same_weights_gigpo_minus_grpo": same_weights}


def training_windows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Training success averaged over each window of TRAINING_WINDOWS (iterations, inclusive) per run, None where
    the run did not log every iteration of it; and per estimator the mean over its seeds of each later window
    minus the first, over the seeds that completed both. With RL_GAMES=fresh every iteration draws games no run
    played before, so this reads transfer from one estimator alone."""
    names = [f"{first}-{last}" for first, last in TRAINING_WINDOWS]
    by_run, by_estimator = {}, defaultdict(list)
    for run in runs:
        success = {p["iteration"]: p["success"] for p in run["training"]}
        means = {name: float(np.mean([success[i] for i in range(first, last + 1)]))
                 if all(i in success for i in range(first, last + 1)) else None
                 for name, (first, last) in zip(names, TRAINING_WINDOWS)}
        by_run[f"{run['estimator']}_seed{run['seed']}"] = means
        by_estimator[run["estimator"]].append(means)
    minus_first = {}
    for estimator, seeds in sorted(by_estimator.items()):
        minus_first[estimator] = {}
        for name in names[1:]:
            lifts = [means[name] - means[names[0]] for means in seeds
                     if means[name] is not None and means[names[0]] is not None]
            minus_first[estimator][name] = {"mean": float(np.mean(lifts)) if lifts else None, "seeds": len(lifts)}
    return {"windows": names, "runs": by_run, "minus_first_window": minus_first}


def parameter_counts(model_dir: Path) -> dict[str, int] | None:
    """{"params", "embedding_params"} of the safetensors weights in `model_dir` (the token-embedding and output
    tables count as embedding); None when there are none."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = embedding = 0
    for path in files:
        with safe_open(path, "np") as weights:
            for name in weights.keys():
                count = int(np.prod(weights.get_slice(name).get_shape()))
                total += count
                embedding += count * any(part in name for part in ("wte.", "lm_head", "embed_tokens"))
    return {"params": total, "embedding_params": embedding}


def games(work: Path, seed: int, rl_games: str) -> dict[str, Any]:
    """Games per split: the rows of the RL parquet files (the training games' from WORK/data_fresh for fresh ones,
    which SFT never learned from)."""
    import pandas as pd

    files = {"train": work / ("data_fresh" if rl_games == "fresh" else "data") / "train.parquet",
             **{split: work / "data" / f"{split}.parquet" for split in SPLITS}}
    counts = {split: len(pd.read_parquet(path, columns=["data_source"]))
              for split, path in files.items() if path.exists()}
    return {**counts, "seed": seed, "rl_games": rl_games}


def plot(runs: list[dict[str, Any]], sft_level: dict[str, float], path: Path) -> None:
    """Success vs environment steps, one panel per validation split and one for the training rollouts: every run
    (colour: estimator, line style: seed) and, on the validation panels, the SFT level as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"gigpo": "tab:blue", "grpo": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    seeds = sorted({run["seed"] for run in runs})
    figure, axes = plt.subplots(1, len(SPLITS) + 1, figsize=(16, 4), sharey=True)
    panels = [(split, "curve", split) for split in SPLITS] + [("training rollouts", "training", "success")]
    for axis, (title, points, key) in zip(axes, panels):
        for run in runs:
            axis.plot([p["env_steps"] for p in run[points]], [p[key] for p in run[points]], marker="o",
                      markersize=3, color=colours[run["estimator"]],
                      linestyle=styles[seeds.index(run["seed"]) % len(styles)],
                      label=f"{run['estimator']} seed {run['seed']}")
        if title in sft_level:
            axis.axhline(sft_level[title], color="grey", linewidth=1, label="SFT")
        axis.set_title(title)
        axis.set_xlabel("environment steps (training actions)")
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("success")
    axes[len(SPLITS) - 1].legend(fontsize=8)  # a validation panel: it also names the SFT line
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def sft_selection(path: Path) -> dict[str, Any]:
    """The SFT length the recipe fixed by validation loss (sft_select.py's record): epochs and that loss."""
    if not path.is_file():
        return {"epochs": None}
    selection = json.loads(path.read_text())
    return {"epochs": selection["epoch"], "valid_seen_loss": selection["val_loss"],
            "valid_seen_loss_by_step": selection["val_losses"]}


def sft_rows(sft_dir: Path) -> dict[str, int] | None:
    """The SFT train rows per source (expert, walkthrough, relabeled: sft_data's `source` column), if written."""
    import pandas as pd

    path = sft_dir / "train.parquet"
    return pd.read_parquet(path, columns=["source"])["source"].value_counts().to_dict() if path.is_file() else None


def sft_sha256(path: Path) -> str | None:
    """The SFT weights' digest: of a checkpoint folder, or as the SHA256SUMS of its parts records it."""
    return read_sums(path)[WEIGHTS] if path.is_file() else weights_sha256(path)


def sft_checkpoints(models: list[str]) -> str | dict[str, str] | None:
    """The SFT weights' digest, or {seed: digest} from SEED:PATH arguments (one checkpoint per seed)."""
    if not models:
        return None
    if len(models) == 1 and ":" not in models[0]:
        return sft_sha256(Path(models[0]))
    by_seed = {}
    for text in models:
        seed, _, path = text.partition(":")
        if not seed.isdigit() or not path:
            raise SystemExit(f"--sft-model {text!r}: with several checkpoints, each is SEED:PATH")
        by_seed[seed] = sft_sha256(Path(path))
    return by_seed


def sft_eval(path: Path) -> dict[str, Any] | None:
    """The recipe's sft-eval stage: the SFT checkpoint's success per split (eval_alfworld.sh's JSON), if run."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {"temperature": report["temperature"],
            **{split: report["splits"][split]["success"] for split in SPLITS if split in report["splits"]}}


def joined_sessions(logs: list[str]) -> str:
    """One run's console logs from the machines it ran on, in order, as one log: each session resumes where the
    one before stopped (a step both log, such as the validation a resumed run repeats, is the later's). A session
    that trains an iteration an earlier one trained is no continuation but another run (a replicate): ValueError."""
    trained_up_to = 0
    for number, log in enumerate(logs, 1):
        trained = [point["iteration"] for point in training_success(log)]
        if trained and min(trained) <= trained_up_to:
            raise ValueError(f"session {number} trains iteration {min(trained)} again (an earlier session trained "
                             f"up to {trained_up_to}): a run of its own, not a continuation; give it another seed")
        trained_up_to = max(trained, default=trained_up_to)
    return "\n".join(logs)


def parse_run(text: str) -> tuple[str, int, Path]:
    """ESTIMATOR:SEED:LOG -> (estimator, seed, log path)."""
    estimator, seed, log = text.split(":", 2)
    if estimator not in ESTIMATORS:
        raise ValueError(f"run {text!r}: the estimator must be one of {ESTIMATORS}")
    return estimator, int(seed), Path(log)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="ESTIMATOR:SEED:LOG, one per run and session: a run continued "
                        "on another machine is given once per session's log, in session order")
    parser.add_argument("--episodes", nargs="*", default=[], help="ESTIMATOR:SEED:FILE, each run's validation "
                        "episodes (validation_dump), several files a run in session order: the interval resamples "
                        "games too (needs --games)")
    parser.add_argument("--games", type=Path, help="the runs' game tree (the recipe's WORK/data/games)")
    parser.add_argument("--gpu", required=True, help="names the result files: learning_<gpu>.json/.png")
    parser.add_argument("--train-batch", type=int, required=True, help="games per iteration, B")
    parser.add_argument("--group-size", type=int, required=True, help="sessions per game, G")
    parser.add_argument("--work", type=Path, required=True, help="the recipe's WORK (data/, stage_seconds/)")
    parser.add_argument("--model", type=Path, help="the checkpoint SFT started from")
    parser.add_argument("--sft-model", action="append", default=[], help="the SFT checkpoint the runs started "
                        "from, or the SHA256SUMS of its parts (checkpoint_parts split), which records its weights' "
                        "digest; given once per seed as SEED:PATH where the seeds ran on machines of their own "
                        "(each SFT run makes another checkpoint)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--sft-source", choices=("walkthrough", "expert", "mixed"), default="mixed",
                        help="the demonstrations SFT learned from (the recipe's SFT_SOURCE)")
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--games-seed", type=int, default=0)
    parser.add_argument("--rl-games", choices=("demonstrated", "fresh"), default="demonstrated",
                        help="the RL runs' training games (the recipe's RL_GAMES)")
    parser.add_argument("--command", default=" ".join(sys.argv))
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--table", type=Path, help="also write each run's per-iteration table to this text file")
    args = parser.parse_args(argv)

    sessions: dict[tuple[str, int], list[Path]] = {}
    for text in args.runs:
        estimator, seed, log = parse_run(text)
        sessions.setdefault((estimator, seed), []).append(log)
    runs, tables = [], []
    for (estimator, seed), logs in sessions.items():
        texts = [read_console_log(log) for log in logs]
        try:
            text = joined_sessions(texts)
            curve = learning_curve(text, args.train_batch * args.group_size)
        except ValueError as err:
            raise SystemExit(f"{' + '.join(map(str, logs))}: {err}") from None
        runs.append({"estimator": estimator, "seed": seed, "env_steps_reached": env_steps_reached(text),
                     "curve": curve, "training": training_success(text)})
        tables.append(f"# {estimator} seed {seed}\n{iteration_table(text)}\n")
    outcomes = None
    if args.episodes:
        if args.games is None:
            raise SystemExit("--episodes needs --games: the game tree names each episode's game")
        openings = opening_games(args.games, "valid_unseen")
        outcomes = {}
        for text in args.episodes:  # a run's files from several sessions: a step both hold is the later file's
            estimator, seed, path = parse_run(text)
            outcomes.setdefault((estimator, seed), {}).update(game_outcomes(read_episodes(path), openings))
    sft_level = {split: float(np.mean([run["curve"][0][split] for run in runs])) for split in SPLITS}
    stage_dir = args.work / "stage_seconds"
    result = {
        "gpu": args.gpu,
        "command": args.command,
        "stage_seconds": {p.name: int(p.read_text()) for p in sorted(stage_dir.glob("*"))} if stage_dir.is_dir()
        else {},
        "model": {"preset": args.preset, **((parameter_counts(args.model) if args.model else None) or {})},
        "games": games(args.work, args.games_seed, args.rl_games),
        "sft": {"source": args.sft_source, "train_rows": sft_rows(args.work / "data" / "sft"),
                **sft_selection(args.work / "sft_selection.json"),
                "checkpoint_sha256": sft_checkpoints(args.sft_model),
                **sft_level, "level": "the mean iteration-0 validation of the runs",
                "eval": sft_eval(args.work / "sft_eval.json")},
        "eval": {"temperature": args.temperature},
        "runs": runs,
        "lift": lift(runs, outcomes),
        "comparison": comparison(runs, outcomes),
        "training_comparison": training_comparison(runs),
        "training_windows": training_windows(runs),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"learning_{args.gpu}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(runs, sft_level, out.with_suffix(".png"))
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text("\n".join(tables))
    print(json.dumps({key: result[key] for key in ("lift", "comparison", "training_windows")}))
    untrained = [run for run, iteration in (result["comparison"] or {}).get("iterations", {}).items()
                 if iteration == 0]
    if untrained:
        print(f"warning: {', '.join(untrained)} compared at iteration 0 (the SFT level, before any update): their "
              f"first validation after training came after more environment steps than some run reached in all; "
              f"validate more often (TEST_FREQ) or train longer", file=sys.stderr)


if __name__ == "__main__":
    main()
