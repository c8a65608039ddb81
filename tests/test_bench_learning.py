"""bench/learning.py on synthetic console logs of four runs, printed with verl's console formatter."""
import gzip
import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

from alfworld_games import GAMES_ROOT
from molmo_agent.envs.alfworld.games import load_games
from molmo_agent.envs.prompts import build_prompt
from verl.utils.logger.aggregate_logger import concat_dict_to_str

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import learning  # noqa: E402

B, G = 2, 2
# (estimator, seed) -> (episode length per iteration, dropped-episode rate per iteration 1..4,
#                       valid_unseen success at the validations of iterations 0, 2, 4)
RUNS = {
    ("gigpo", 0): (5, [0, 0, 0, 0], [0.2, 0.9, 0.5]),  # its best point (0.9) lies before the comparison point
    ("gigpo", 1): (5, [0, 0, 0, 0], [0.2, 0.4, 0.6]),
    ("grpo", 0): (10, [0.25, 0, 0, 0], [0.2, 0.3, 0.8]),
    ("grpo", 1): (10, [0, 0, 0, 0], [0.2, 0.2, 0.9]),
}


def run_log(length: int, dropped: list[float], unseen: list[float]) -> str:
    """verl's console lines of a run that validates at iterations 0, 2 and 4 (valid_seen = valid_unseen / 2, and
    valid_unseen's pick_two task type a quarter of it), with our trainer's step counts: every played episode's
    actions, logged with the training and validation metrics."""
    lines, cumulative = ["Training Progress: 0it"], 0
    for iteration in range(5):
        metrics = {}
        if iteration > 0:
            played_steps = round(length * B * G * (1 - dropped[iteration - 1]))
            cumulative += played_steps
            metrics = {"actor/pg_loss": 0.1, "env/episode_length": float(length), "env/success_rate": 0.1 * iteration,
                       "env/dropped_episode_rate": dropped[iteration - 1], "env/steps": played_steps}
        if iteration % 2 == 0:
            success = unseen[iteration // 2]
            metrics["val-core/alfworld/valid_unseen/acc/mean@1"] = success
            metrics["val-core/alfworld/valid_seen/acc/mean@1"] = success / 2
            metrics["val-aux/alfworld/valid_unseen/success_rate/pick_two_obj_and_place/mean@1"] = success / 4
        metrics["env/cumulative_steps"] = cumulative
        lines.append(f"(TaskRunnerV1 pid=7) {concat_dict_to_str(metrics, step=iteration)}")
    return "\n".join(lines) + "\n"


def test_curve_counts_played_actions_and_starts_at_the_sft_validation():
    curve = learning.learning_curve(run_log(*RUNS["grpo", 0]), B * G)
    assert [p["iteration"] for p in curve] == [0, 2, 4]
    # 10 steps x 4 sessions per iteration, a quarter of iteration 1's dropped (their actions left no sample).
    assert [p["env_steps"] for p in curve] == [0, 70, 150]
    assert [p["episodes"] for p in curve] == [0, 8, 16]
    assert curve[0]["train_success"] is None and curve[2]["train_success"] == pytest.approx(0.4)
    # iterations 1-2 and 3-4 trained at 0.1 x the iteration
    assert [p["train_success_mean"] for p in curve] == [None, pytest.approx(0.15), pytest.approx(0.35)]
    assert [p["valid_unseen"] for p in curve] == [0.2, 0.3, 0.8]
    assert [p["valid_seen"] for p in curve] == [0.1, 0.15, 0.4]
    assert curve[2]["by_task_type"] == {"valid_seen": {}, "valid_unseen": {"pick_two_obj_and_place": 0.2}}


def test_a_validation_lost_to_a_stop_and_repeated_on_resume_keeps_its_steps():
    # the first session's run saved iteration 4 and was stopped while validating it: no line for iteration 4; the
    # resumed run validates at 4 before training (its checkpoint kept the step count), then trains on
    first = run_log(*RUNS["grpo", 0])
    first = first[:first.index("step:4 - ")].rsplit("\n", 1)[0] + "\n"
    resumed = ("(TaskRunnerV1 pid=8) " + concat_dict_to_str({
        "val-core/alfworld/valid_unseen/acc/mean@1": 0.8, "val-core/alfworld/valid_seen/acc/mean@1": 0.4,
        "env/cumulative_steps": 150}, step=4) + "\n")
    curve = learning.learning_curve(first + resumed, B * G)
    assert [(p["iteration"], p["env_steps"], p["episodes"]) for p in curve] == [(0, 0, 0), (2, 70, 8), (4, 150, 16)]
    assert curve[2]["train_success_mean"] == pytest.approx(0.3)  # iteration 4's rollouts were lost with its line
    with pytest.raises(ValueError, match="iteration 2's validation logged no env/cumulative_steps"):
        learning.learning_curve(first.replace("env/cumulative_steps:70", "x:70"), B * G)


def test_a_run_without_a_validation_before_training_is_refused():
    log = run_log(*RUNS["gigpo", 0]).replace("step:0 - ", "step:6 - ")
    with pytest.raises(ValueError, match="val_before_train=True"):
        learning.learning_curve(log, B * G)


@pytest.mark.parametrize("gzipped", [False, True])  # kept logs are committed gzipped
def test_comparison_reads_the_last_point_every_run_reached_never_the_best(tmp_path, capsys, gzipped):
    logs = []
    for (estimator, seed), run in RUNS.items():
        path = tmp_path / f"{estimator}_{seed}.log{'.gz' if gzipped else ''}"
        if gzipped:
            with gzip.open(path, "wt") as file:
                file.write(run_log(*run))
        else:
            path.write_text(run_log(*run))
        logs.append(f"{estimator}:{seed}:{path}")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    for split, count in {"train": 6, "valid_seen": 3, "valid_unseen": 2}.items():
        pd.DataFrame({"data_source": [f"alfworld/{split}"] * count}).to_parquet(work / "data" / f"{split}.parquet")
    (work / "data" / "sft").mkdir()
    pd.DataFrame({"source": ["expert"] * 5 + ["relabeled"] * 2}).to_parquet(work / "data" / "sft" / "train.parquet")
    (work / "stage_seconds").mkdir()
    (work / "stage_seconds" / "sft").write_text("321\n")
    (work / "sft_selection.json").write_text(json.dumps({"step": 57, "epoch": 3, "val_loss": 1.49,
                                                          "val_losses": {"19": 4.55, "38": 1.85, "57": 1.49}}))
    (work / "sft_eval.json").write_text(json.dumps({"temperature": 0.4, "splits": {
        "valid_seen": {"games": 3, "success": 1 / 3}, "valid_unseen": {"games": 2, "success": 0.5}}}))
    # the SFT weights stay on the GPU node: the SHA256SUMS of their parts names them
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("aa11  part00\nbb22  checkpoint.tar\ncc33  weights\n")
    out = tmp_path / "results"
    learning.main(["--gpu", "h200", "--train-batch", str(B), "--group-size", str(G), "--work", str(work),
                   "--temperature", "0.4", "--command", "run.sh", "--out-dir", str(out), "--sft-model", str(sums),
                   *logs])

    result = json.loads((out / "learning_h200.json").read_text())
    assert (out / "learning_h200.png").stat().st_size > 0
    assert result["gpu"] == "h200" and result["eval"] == {"temperature": 0.4}
    assert result["stage_seconds"] == {"sft": 321}
    assert result["games"] == {"train": 6, "valid_seen": 3, "valid_unseen": 2, "seed": 0, "rl_games": "demonstrated"}
    assert result["sft"]["valid_unseen"] == pytest.approx(0.2) and result["sft"]["epochs"] == 3
    assert result["sft"]["valid_seen_loss"] == 1.49 and result["sft"]["checkpoint_sha256"] == "cc33"
    assert result["sft"]["train_rows"] == {"expert": 5, "relabeled": 2}
    assert result["sft"]["eval"] == {"temperature": 0.4, "valid_seen": pytest.approx(1 / 3), "valid_unseen": 0.5}
    assert [(r["estimator"], r["seed"]) for r in result["runs"]] == list(RUNS)
    comparison = result["comparison"]
    # GiGPO's runs reached 80 steps (5 x 4 x 4 iterations), GRPO's more: GiGPO at iteration 4, GRPO at 2 (seed 0:
    # 70 steps) and 2 (seed 1: 80 steps). Seed 0: 0.5 - 0.3; seed 1: 0.6 - 0.2.
    assert comparison["env_steps"] == 80
    assert comparison["iterations"] == {"gigpo_seed0": 4, "gigpo_seed1": 4, "grpo_seed0": 2, "grpo_seed1": 2}
    assert comparison["gigpo_minus_grpo_valid_unseen"] == pytest.approx(0.3)
    lo, hi = comparison["ci95"]
    assert 0.2 - 1e-9 <= lo <= 0.3 <= hi <= 0.4 + 1e-9
    lift = result["lift"]  # the same points, each estimator alone; valid_seen is half of valid_unseen in these logs
    assert lift["iterations"] == comparison["iterations"]
    # not the best point's 0.7 / 0.55
    assert lift["gigpo"]["valid_unseen"] == pytest.approx(0.35) and lift["gigpo"]["valid_seen"] == pytest.approx(0.175)
    assert lift["gigpo"]["seeds"]["0"]["valid_unseen"] == pytest.approx(0.3)
    assert lift["grpo"]["valid_unseen"] == pytest.approx(0.05)
    assert lift["gigpo"]["bootstrap"].startswith("over seeds")
    assert lift["gigpo"]["ci95"] == pytest.approx([0.3, 0.4])  # two seeds, 0.3 and 0.4
    assert [p["iteration"] for p in result["runs"][0]["training"]] == [1, 2, 3, 4]
    # every run's training success is 0.1 x iteration: iterations 2..4 of both seeds pair, all even
    assert result["training_comparison"]["pairs"] == 6 and result["training_comparison"]["gigpo_minus_grpo"] == 0
    assert "warning" not in capsys.readouterr().err

    # a GiGPO run whose episodes are long has played more steps by its first validation after training than the
    # GRPO runs played in all: it is compared untrained, and the report says so
    long = tmp_path / "long.log"
    long.write_text(run_log(40, [0, 0, 0, 0], [0.2, 0.9, 0.5]))
    learning.main(["--gpu", "h200", "--train-batch", str(B), "--group-size", str(G), "--work", str(work),
                   "--temperature", "0.4", "--command", "run.sh", "--out-dir", str(out), f"gigpo:0:{long}", *logs[2:]])
    assert "warning: gigpo_seed0 compared at iteration 0" in capsys.readouterr().err


def test_steps_trained_after_the_last_validation_count_as_reached():
    # Both runs stop after iteration 3 (validations at 0 and 2). GiGPO played 20 steps an iteration (40 at its
    # iteration-2 validation, 60 in all), GRPO 24 (48, 72): every run reached 60 steps, so both compare at
    # iteration 2, GRPO's 48 steps included, not GRPO untrained at iteration 0 against GiGPO's 40.
    texts = {estimator: "\n".join(run_log(length, [0, 0, 0, 0], [0.2, 0.4, 0.6]).splitlines()[:5]) + "\n"
             for estimator, length in (("gigpo", 5), ("grpo", 6))}
    runs = [{"estimator": e, "seed": 0, "env_steps_reached": learning.env_steps_reached(text),
             "curve": learning.learning_curve(text, B * G)} for e, text in texts.items()]
    assert [run["env_steps_reached"] for run in runs] == [60, 72]
    comparison = learning.comparison(runs)
    assert comparison["env_steps"] == 60
    assert comparison["iterations"] == {"gigpo_seed0": 2, "grpo_seed0": 2}


def test_both_lifts_of_a_seed_are_over_one_sft_level():
    # one SFT checkpoint validated twice (each run's iteration 0) reads 0.2 and 0.4: its level is 0.3 for both
    texts = {"gigpo": run_log(5, [0, 0, 0, 0], [0.2, 0.4, 0.5]), "grpo": run_log(5, [0, 0, 0, 0], [0.4, 0.4, 0.4])}
    runs = [{"estimator": e, "seed": 0, "env_steps_reached": learning.env_steps_reached(text),
             "curve": learning.learning_curve(text, B * G)} for e, text in texts.items()]
    lift = learning.lift(runs)
    assert lift["gigpo"]["valid_unseen"] == pytest.approx(0.2)
    assert lift["grpo"]["valid_unseen"] == pytest.approx(0.1)
    assert learning.comparison(runs)["gigpo_minus_grpo_valid_unseen"] == pytest.approx(0.1)


def test_parameter_counts_split_off_the_two_token_tables(molmo2_dir):
    from safetensors import safe_open

    counts = learning.parameter_counts(molmo2_dir)
    with safe_open(next(molmo2_dir.glob("*.safetensors")), "np") as weights:
        tables = [weights.get_slice(name).get_shape() for name in weights.keys()
                  if name.endswith(("lm_head.weight", "wte.embedding", "wte.new_embedding"))]
    # The output table and the input table (the vocabulary plus the added tokens); the vision encoder's patch and
    # position embeddings are not token tables.
    assert len(tables) == 3 and all(width == tables[0][1] for _, width in tables)
    assert counts["embedding_params"] == sum(rows * width for rows, width in tables)
    assert counts["params"] > counts["embedding_params"]
    assert learning.parameter_counts(molmo2_dir / "nowhere") is None


def test_the_bootstrap_draws_games_and_seeds_with_replacement():
    rng = np.random.default_rng(0)
    assert set(learning.bootstrap_over_games_and_seeds(np.full((2, 5), 0.25), rng)) == {0.25}
    # one seed, one won game of four: each resample's mean is a count of that game's draws over four
    resampled = learning.bootstrap_over_games_and_seeds(np.array([[1.0, 0.0, 0.0, 0.0]]), rng)
    assert resampled.shape == (learning.BOOTSTRAP_SAMPLES,)
    assert set(np.round(resampled * 4, 9)) <= {0, 1, 2, 3, 4} and resampled.mean() == pytest.approx(0.25, abs=0.02)
    # two seeds whose differences cancel game by game: any draw of both seeds averages to 0, a draw of one twice
    # to that seed's mean over the drawn games
    resampled = learning.bootstrap_over_games_and_seeds(np.array([[1.0, -1.0], [-1.0, 1.0]]), rng)
    assert set(np.round(resampled, 9)) <= {-1.0, 0.0, 1.0}


def test_episodes_are_paired_game_by_game():
    openings = learning.opening_games(GAMES_ROOT, "valid_unseen")
    games = sorted(openings.items(), key=lambda item: item[1])
    assert len(games) == len(load_games(str(GAMES_ROOT), "valid_unseen"))

    def episode(step, opening, acc):
        (task, room), _ = opening
        # as verl decodes it: the chat template's words around our first-step prompt
        return {"step": step, "opening_prompt": f"user\n{build_prompt(task, room, ['look'])}\nassistant\n",
                "acc": acc}

    episodes = [episode(0, games[0], 1.0), episode(0, games[1], 0.0), episode(5, games[0], 0.0),
                {"step": 5, "opening_prompt": "a game of another split", "acc": 1.0}]
    assert learning.game_outcomes(episodes, openings) == {0: {games[0][1]: 1.0, games[1][1]: 0.0},
                                                          5: {games[0][1]: 0.0}}

    runs = [{"estimator": e, "seed": s, "env_steps_reached": 100,
             "curve": [{"iteration": 0, "env_steps": 0, "valid_unseen": 0.0},
                       {"iteration": 5, "env_steps": 100, "valid_unseen": u}]}
            for e, s, u in (("gigpo", 0, 0.5), ("grpo", 0, 0.0))]
    outcomes = {("gigpo", 0): {5: {games[0][1]: 1.0, games[1][1]: 0.0}},
                ("grpo", 0): {5: {games[0][1]: 0.0, games[1][1]: 0.0}}}
    paired = learning.comparison(runs, outcomes)
    assert paired["bootstrap"] == "paired over games and seeds (2 valid_unseen games x 1 seeds)"
    assert paired["gigpo_minus_grpo_valid_unseen"] == 0.5
    assert paired["ci95"] == [0.0, 1.0]  # two games, one won by GiGPO alone
    assert learning.comparison(runs)["ci95"] == [0.5, 0.5]  # one seed: nothing to resample without games


def test_a_lift_pairs_each_game_with_its_own_sft_outcome():
    # one estimator, two seeds, two games; seed 0 won game a at iteration 0 and lost it at 5, won b only at 5
    runs = [{"estimator": "gigpo", "seed": s, "env_steps_reached": 100,
             "curve": [{"iteration": 0, "env_steps": 0, "valid_seen": 0.5, "valid_unseen": u0},
                       {"iteration": 5, "env_steps": 100, "valid_seen": 0.5, "valid_unseen": u5}]}
            for s, u0, u5 in ((0, 0.5, 0.5), (1, 0.0, 1.0))]
    outcomes = {("gigpo", 0): {0: {"a": 1.0, "b": 0.0}, 5: {"a": 0.0, "b": 1.0}},
                ("gigpo", 1): {0: {"a": 0.0, "b": 0.0}, 5: {"a": 1.0, "b": 1.0}}}
    lift = learning.lift(runs, outcomes)["gigpo"]
    assert lift["valid_unseen"] == pytest.approx(0.5) and lift["valid_seen"] == 0
    assert lift["seeds"] == {"0": {"valid_seen": 0, "valid_unseen": 0}, "1": {"valid_seen": 0, "valid_unseen": 1}}
    assert lift["bootstrap"] == "over games and seeds (2 valid_unseen games x 2 seeds)"
    # by game: seed 0 -1 / +1, seed 1 +1 / +1; a resample of seed 0 and game a alone is -1
    lo, hi = lift["ci95"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(1.0)
    # without the iteration-0 episodes of a run, games cannot be paired: the interval resamples seeds
    del outcomes["gigpo", 1][0]
    assert learning.lift(runs, outcomes)["gigpo"]["ci95"] == pytest.approx([0.0, 1.0])


def test_games_that_open_alike_are_one_unit_of_their_averaged_episodes(monkeypatch):
    from molmo_agent.envs.alfworld.session import AlfworldSession
    from molmo_agent.envs.base import INFO_TASK

    # every game opens alike: their episodes cannot say which game they played
    monkeypatch.setattr(AlfworldSession, "reset", lambda self, options: ("a kitchen", {INFO_TASK: "cool a mug"}))
    openings = learning.opening_games(GAMES_ROOT, "valid_unseen")
    paths = sorted(game.path for game in load_games(str(GAMES_ROOT), "valid_unseen"))
    assert len(paths) > 1 and openings == {("cool a mug", "a kitchen"): " | ".join(paths)}
    prompt = f"user\n{build_prompt('cool a mug', 'a kitchen', ['look'])}\nassistant\n"
    episodes = [{"step": 0, "opening_prompt": prompt, "acc": acc} for acc in (1.0, 0.0, 0.0, 1.0)]
    assert learning.game_outcomes(episodes, openings) == {0: {" | ".join(paths): 0.5}}


def capture_comparison(monkeypatch) -> dict:
    """What bench/learning.py's main passes to `comparison` (runs, outcomes), with the plot left out."""
    captured = {}
    monkeypatch.setattr(learning, "comparison",
                        lambda runs, outcomes: captured.update(runs=runs, outcomes=outcomes) or {})
    monkeypatch.setattr(learning, "plot", lambda *args: None)
    return captured


def written_logs(tmp_path) -> list[str]:
    """RUNS' console logs written under `tmp_path`, as ESTIMATOR:SEED:LOG arguments."""
    logs = []
    for (estimator, seed), run in RUNS.items():
        (tmp_path / f"{estimator}{seed}.log").write_text(run_log(*run))
        logs.append(f"{estimator}:{seed}:{tmp_path / f'{estimator}{seed}.log'}")
    return logs


def report(tmp_path, *arguments: str) -> None:
    """bench/learning.py's main on an empty work folder, results under `tmp_path`."""
    (tmp_path / "work").mkdir(exist_ok=True)
    learning.main(["--gpu", "h200", "--train-batch", str(B), "--group-size", str(G), "--work",
                   str(tmp_path / "work"), "--temperature", "0.4", "--out-dir", str(tmp_path), *arguments])


def test_a_runs_episode_files_from_several_sessions_are_merged(tmp_path, monkeypatch):
    from molmo_agent.integrations.verl.validation_dump import write_episodes

    openings = {("heat an egg", "a kitchen"): "egg", ("cool a mug", "a kitchen"): "mug"}
    monkeypatch.setattr(learning, "opening_games", lambda root, split: openings)

    def session(path, step, outcomes):
        write_episodes([{"step": step, "episode": f"u{step}{game}_0", "acc": acc,
                         "opening_prompt": build_prompt(task, "a kitchen", ["look"])}
                        for game, ((task, _), acc) in enumerate(zip(openings, outcomes))], path)
        return str(path)

    captured = capture_comparison(monkeypatch)
    report(tmp_path, *written_logs(tmp_path), "--games", "games", "--episodes",
           f"gigpo:0:{session(tmp_path / 'a.jsonl.gz', 0, [1.0, 0.0])}",
           f"gigpo:0:{session(tmp_path / 'b.jsonl.gz', 2, [0.0, 1.0])}")
    assert captured["outcomes"] == {("gigpo", 0): {0: {"egg": 1.0, "mug": 0.0}, 2: {"egg": 0.0, "mug": 1.0}}}


def test_a_run_continued_on_another_machine_is_one_run_of_its_sessions_logs(tmp_path, monkeypatch):
    captured = capture_comparison(monkeypatch)
    logs = written_logs(tmp_path)
    # GiGPO seed 0's first machine ended after iteration 2; the second resumed there, validated the same weights
    # again (as the first did: 0.9 on valid_unseen) and trained on
    whole = run_log(*RUNS["gigpo", 0])
    cut = whole.index("(TaskRunnerV1 pid=7) step:3 - ")
    (tmp_path / "first.log").write_text(whole[:cut])
    repeated = concat_dict_to_str({"val-core/alfworld/valid_unseen/acc/mean@1": 0.9,
                                   "val-core/alfworld/valid_seen/acc/mean@1": 0.45, "env/cumulative_steps": 40}, step=2)
    (tmp_path / "second.log").write_text(f"(TaskRunnerV1 pid=8) {repeated}\n{whole[cut:]}")
    report(tmp_path, f"gigpo:0:{tmp_path / 'first.log'}", *logs[1:], f"gigpo:0:{tmp_path / 'second.log'}")
    runs = {(run["estimator"], run["seed"]): run for run in captured["runs"]}
    assert len(captured["runs"]) == 4
    assert runs["gigpo", 0]["curve"] == learning.learning_curve(whole, B * G)
    assert [p["iteration"] for p in runs["gigpo", 0]["training"]] == [1, 2, 3, 4]
    assert runs["gigpo", 0]["env_steps_reached"] == learning.env_steps_reached(whole)
    # a second run of the same seed from the start is a replicate, never a continuation
    with pytest.raises(SystemExit, match="session 2 trains iteration 1 again"):
        report(tmp_path, *logs, f"gigpo:0:{tmp_path / 'first.log'}")


def test_seeds_from_machines_of_their_own_record_a_checkpoint_each(tmp_path):
    sums = {seed: tmp_path / f"SHA256SUMS_{seed}" for seed in (0, 1)}
    for seed, path in sums.items():
        path.write_text(f"aa11  part00\nbb22  checkpoint.tar\nd{seed}  weights\n")
    assert learning.sft_checkpoints([str(sums[0])]) == "d0"
    assert learning.sft_checkpoints([f"{seed}:{path}" for seed, path in sums.items()]) == {"0": "d0", "1": "d1"}
    assert learning.sft_checkpoints([]) is None
    with pytest.raises(SystemExit, match="each is SEED:PATH"):
        learning.sft_checkpoints([str(sums[0]), str(sums[1])])


def test_training_success_pairs_the_iterations_both_runs_trained_after():
    def run(estimator, seed, successes):
        return {"estimator": estimator, "seed": seed,
                "training": [{"iteration": i, "env_steps": 10 * i, "success": v} for i, v in successes.items()]}

    runs = [run("gigpo", 0, {1: 0.3, 2: 0.5, 3: 0.4, 4: 0.6}), run("grpo", 0, {1: 0.1, 2: 0.2, 3: 0.4}),
            run("gigpo", 1, {1: 0.2, 2: 0.3}), run("grpo", 1, {1: 0.2, 2: 0.4})]
    # seed 0: iterations 2 and 3 (iteration 1 trained nothing yet, GRPO never reached 4); seed 1: iteration 2
    result = learning.training_comparison(runs)
    assert result["pairs"] == 3 and result["gigpo_at_or_above"] == 2
    assert result["gigpo_minus_grpo"] == pytest.approx((0.3 + 0.0 - 0.1) / 3)
    lo, hi = result["ci95"]
    assert -0.1 - 1e-9 <= lo <= result["gigpo_minus_grpo"] <= hi <= 0.3 + 1e-9
    # iteration 1, before any update: the sampling noise between two runs of the same weights
    assert result["same_weights_gigpo_minus_grpo"] == pytest.approx({"0": 0.2, "1": 0.0})
    assert learning.training_comparison(runs[2:3]) is None  # no GRPO run to pair with


def test_the_iteration_table_has_a_row_per_logged_iteration_and_dashes_where_none_was_logged():
    rows = [line.split() for line in learning.iteration_table(run_log(*RUNS["grpo", 0])).splitlines()[1:]]
    columns = {name: index + 1 for index, (name, _, _) in enumerate(learning.TABLE_COLUMNS)}
    assert [row[0] for row in rows] == ["0", "1", "2", "3", "4"]
    assert rows[2][columns["succ"]] == "0.200" and rows[2][columns["ep.len"]] == "10.0"
    assert rows[2][columns["vs"]] == "0.15" and rows[2][columns["vu"]] == "0.30"
    assert rows[2][columns["env steps"]] == "70"
    assert rows[1][columns["vu"]] == "-" and rows[0][columns["succ"]] == "-"
    assert rows[2][-1] == "-"  # no timing logged


def test_fresh_rl_games_are_counted_from_their_own_folder(tmp_path):
    """RL_GAMES=fresh: the training games are WORK/data_fresh's, the validation games WORK/data's."""
    for folder, split, count in (("data", "train", 6), ("data", "valid_unseen", 2), ("data_fresh", "train", 9)):
        (tmp_path / folder).mkdir(exist_ok=True)
        pd.DataFrame({"data_source": [split] * count}).to_parquet(tmp_path / folder / f"{split}.parquet")
    assert learning.games(tmp_path, 0, "fresh") == {"train": 9, "valid_unseen": 2, "seed": 0, "rl_games": "fresh"}
    assert learning.games(tmp_path, 1, "demonstrated")["train"] == 6


def test_training_windows_read_one_estimator_without_a_pair(tmp_path):
    """GiGPO-only runs (no GRPO seed to pair): no comparison, but each run's training-success windows and the
    estimator's mean lift of a later window over the first, over the seeds that completed both."""
    success = {0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.6, 0.6, 0.9], 1: [0.2] * 4 + [0.3] * 4}
    runs = []
    for seed, values in success.items():
        training = [{"iteration": i + 1, "env_steps": 10 * (i + 1), "success": v} for i, v in enumerate(values)]
        runs.append({"estimator": "gigpo", "seed": seed, "training": training, "env_steps_reached": 80,
                     "curve": [{"iteration": 0, "env_steps": 0, "valid_unseen": 0.2, "valid_seen": 0.2}]})
    assert learning.comparison(runs) is None
    windows = learning.training_windows(runs)
    assert windows["runs"]["gigpo_seed0"] == {"1-4": pytest.approx(0.25), "5-8": pytest.approx(0.55), "9-12": None}
    assert windows["runs"]["gigpo_seed1"]["5-8"] == pytest.approx(0.3)
    # seed 0: +0.30, seed 1: +0.10; no seed completed 9-12
    assert windows["minus_first_window"]["gigpo"] == {"5-8": {"mean": pytest.approx(0.2), "seeds": 2},
                                                     "9-12": {"mean": None, "seeds": 0}}
