"""`tests/gpu/run_all.sh`'s learn-rl stage joins the runs carried in from an earlier machine for its estimator and
seeds, and refuses one of its estimator's runs whose seed it does not run (LEARN_SEEDS defaults to 0: a carried
seed-2 run would otherwise be left behind while seed 0 starts afresh), unless the lane is told to start afresh
beside them (LEARN_CONTINUE=0); it links the node's shared games into the lane's work, data_fresh too for the
recipe's RL_GAMES=fresh; it brings back (and exports) its own runs only. The stage's function
runs alone here, with `python3` stubbed to print what it was asked."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_LEARN_RL = 'eval "$(sed -n "/^learn_rl_export() {/,/^}/p; /^learn_rl() {/,/^}/p" tests/gpu/run_all.sh)"; learn_rl'
LEARN_RL = 'python3() { echo "python3 $*"; return 1; }; ' + RUN_LEARN_RL


def learn_rl(home: Path, seeds: str, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "LEARN_ESTIMATOR": "gigpo", "LEARN_SEEDS": seeds,
           "LEARN_WORK": str(home / "work"), **variables}
    return subprocess.run(["bash", "-c", LEARN_RL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_a_carried_run_of_a_seed_not_run_is_refused_by_name(tmp_path: Path) -> None:
    for run in ("gigpo_seed2", "grpo_seed0"):  # the other estimator's run is the other lane's
        (tmp_path / f"acc-run-{run}").mkdir()
    done = learn_rl(tmp_path, "0")
    assert done.returncode == 2
    assert done.stdout.strip() == f"learn-rl: {tmp_path}/acc-run-gigpo_seed2/ continues seed 2, not in LEARN_SEEDS (0)"
    done = learn_rl(tmp_path, "1 2")  # its seed: joined (the stub join fails, so the stage stops there)
    assert done.stdout.splitlines()[0] == (f"python3 -m molmo_agent.models.checkpoint_parts join "
                                           f"{tmp_path}/acc-run-gigpo_seed2/ {tmp_path}/work/runs/gigpo_seed2/ckpt")
    assert done.returncode == 1


def test_a_side_lane_starts_afresh_beside_carried_runs(tmp_path: Path) -> None:
    (tmp_path / "acc-run-gigpo_seed0").mkdir()
    done = learn_rl(tmp_path, "0", LEARN_CONTINUE="0")  # its first call: the SFT checkpoint, not the carried run
    assert done.stdout.splitlines()[0] == (f"python3 -m molmo_agent.models.checkpoint_parts join "
                                           f"{tmp_path}/acc-sft {tmp_path}/work/sft_model")
    assert done.returncode == 1


# Past the checkpoints: the games stage and the runs stubbed, the shared games made as carried_data and the
# recipe's games stage would (the real ones are tested with the recipe)
LEARN_RL_DATA = ('python3() { echo "python3 $*"; }; timeout() { echo "timeout $*"; }; '
                 'carried_data() { mkdir -p "$1/data/games"; }; '
                 'bash() { [ "$RL_GAMES" = fresh ] && mkdir -p "$WORK/data_fresh"; echo "bash $*"; }; ' + RUN_LEARN_RL)


def test_the_lanes_share_the_nodes_games_and_fresh_ones_when_asked(tmp_path: Path) -> None:
    shared = tmp_path / "alfworld_learning_games"
    for lane, rl_games in (("a", "demonstrated"), ("b", "fresh")):
        work = tmp_path / f"work-{lane}"
        env = {**os.environ, "HOME": str(tmp_path), "LEARN_ESTIMATOR": "gigpo", "LEARN_WORK": str(work),
               "LEARN_GAMES_WORK": str(shared), "OUT": str(tmp_path / "out"), "RL_GAMES": rl_games}
        (tmp_path / "out").mkdir(exist_ok=True)
        done = subprocess.run(["bash", "-c", LEARN_RL_DATA], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (work / "data").resolve() == shared / "data"
        assert (work / "data_fresh").is_symlink() is (rl_games == "fresh")
    assert (tmp_path / "work-b" / "data_fresh").resolve() == shared / "data_fresh"


def test_a_lane_brings_back_its_own_runs_only(tmp_path: Path) -> None:
    """Lanes that share LEARN_WORK (each reads the SFT checkpoint a learn-sft lane left there) each copy, dump and
    export their own runs: another lane's run may still be training, and every dump or export costs the machine's
    last seconds."""
    work, out = tmp_path / "work", tmp_path / "out"
    for run in ("gigpo_seed0", "gigpo_seed1", "grpo_seed0"):
        (work / "runs" / run / "validation").mkdir(parents=True)
        (work / "runs" / run / "train.log").write_text(run)
        (work / "runs" / run / "ckpt" / "global_step_3").mkdir(parents=True)
        (work / "runs" / run / "ckpt" / "latest_checkpointed_iteration.txt").write_text("3")
    out.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "LEARN_ESTIMATOR": "gigpo", "LEARN_SEEDS": "1", "LEARN_WORK": str(work),
           "LEARN_GAMES_WORK": str(tmp_path / "games"), "OUT": str(out), "LEARN_EXPORT": "1"}
    done = subprocess.run(["bash", "-c", LEARN_RL_DATA], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.glob("*.log")) == ["gigpo_seed1.log"]
    assert (out / "gigpo_seed1.log").read_text() == "gigpo_seed1"
    dumps = [line for line in done.stdout.splitlines() if "validation_dump" in line]
    assert dumps == [f"python3 -m molmo_agent.integrations.verl.validation_dump {work}/runs/gigpo_seed1/validation "
                     f"--out {out}/gigpo_seed1_episodes.jsonl.gz"]
    splits = [line for line in done.stdout.splitlines() if "checkpoint_parts split" in line]
    assert splits == [f"python3 -m molmo_agent.models.checkpoint_parts split {work}/export-staging-gigpo_seed1 "
                      f"{work}/export/gigpo_seed1"]
