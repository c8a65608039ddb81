"""`tests/gpu/background.sh start` keeps lanes on separate GPUs, unless both fix vLLM's KV cache.

Two verl runs on one GPU break each other at start-up: vLLM's memory profiling asserts when another process frees
memory on its GPU meanwhile (tests/gpu/results/lanes_shared_gpu_h200x2_2026-11-30.txt); lanes started with
KV_CACHE_GB skip that profiling. The script runs here on a throw-away checkout whose `run_all.sh` only sleeps,
with HOME in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB_RUN_ALL = ('echo "$LANE" > "$OUT/lane"; echo "$VLLM_PORT" > "$OUT/vllm_port"; echo $$ > "$OUT/pid"; '
                'exec sleep 60\n')


def _checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "tests" / "gpu").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "gpu" / "background.sh", repo / "tests" / "gpu" / "background.sh")
    (repo / "tests" / "gpu" / "run_all.sh").write_text(STUB_RUN_ALL)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    return repo


def _start(repo: Path, home: Path, lane: str, gpus: str | None, kv_cache_gb: str | None = None,
           vllm_port: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "KV_CACHE_GB", "VLLM_PORT")}
    env["HOME"] = str(home)
    if vllm_port is not None:
        env["VLLM_PORT"] = vllm_port
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if kv_cache_gb is not None:
        env["KV_CACHE_GB"] = kv_cache_gb
    return subprocess.run(["bash", "tests/gpu/background.sh", "start", "--lane", lane, "stage"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)


def _stop_lanes(home: Path) -> None:
    for pid_file in home.glob("bg-out-*/pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _lane_file(home: Path, lane: str, name: str) -> str:
    """The text of a file the stub run_all.sh of `lane` writes, once it is there (20 s at most)."""
    path, deadline = home / f"bg-out-{lane}" / name, time.time() + 20
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)
    return path.read_text().strip()


def test_a_lane_may_not_start_on_a_gpu_a_running_lane_uses(tmp_path: Path) -> None:
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    try:
        assert _start(repo, home, "a", "0").returncode == 0
        # the lane's name reaches run_all.sh, which names its work folders after it
        assert _lane_file(home, "a", "lane") == "a"

        refused = _start(repo, home, "b", "1,0")
        assert refused.returncode == 2
        assert "GPU 0 is in use by running lane a" in refused.stdout
        assert not (home / "bg-b").exists()
        # no CUDA_VISIBLE_DEVICES means every GPU, lane a's among them
        assert _start(repo, home, "c", None).returncode == 2
        assert _start(repo, home, "d", "1").returncode == 0
        # lane a's GPU is free again once lane a is done
        (home / "bg-a.done").touch()
        assert _start(repo, home, "b", "0").returncode == 0
        # restarting the finished lane a on its old GPU is refused too: lane b holds it now
        assert _start(repo, home, "a", "0").returncode == 2
    finally:
        time.sleep(0.5)
        _stop_lanes(home)


def test_lanes_that_fix_the_kv_cache_share_a_gpu_only_with_each_other(tmp_path: Path) -> None:
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    try:
        assert _start(repo, home, "a", "0", kv_cache_gb="2").returncode == 0
        assert _start(repo, home, "b", "0", kv_cache_gb="2").returncode == 0
        # a lane that profiles vLLM's memory may not join them, nor may they join it
        refused = _start(repo, home, "c", "0")
        assert refused.returncode == 2 and "KV_CACHE_GB on both lanes" in refused.stdout
        assert _start(repo, home, "d", "1").returncode == 0
        assert _start(repo, home, "e", "1", kv_cache_gb="2").returncode == 2
        # a restarted lane forgets that it shared
        (home / "bg-a.done").touch()
        (home / "bg-b.done").touch()
        assert _start(repo, home, "a", "2").returncode == 0
        assert not (home / "bg-a.shares").exists()
        assert _start(repo, home, "f", "2", kv_cache_gb="2").returncode == 2
    finally:
        time.sleep(0.5)
        _stop_lanes(home)


def test_lanes_draw_vllm_ports_from_ranges_of_their_own(tmp_path: Path) -> None:
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    try:
        for lane in "gsr":
            assert _start(repo, home, lane, "0", kv_cache_gb="4").returncode == 0
        assert [_lane_file(home, lane, "vllm_port") for lane in "gsr"] == ["20000", "21000", "22000"]
        # a restarted lane keeps its range; a port the user set is kept
        (home / "bg-s.done").touch()
        assert _start(repo, home, "s", "0", kv_cache_gb="4").returncode == 0
        assert _lane_file(home, "s", "vllm_port") == "21000"
        assert _start(repo, home, "x", "1", vllm_port="30500").returncode == 0
        assert _lane_file(home, "x", "vllm_port") == "30500"
    finally:
        time.sleep(0.5)
        _stop_lanes(home)


def _wait_beside_a_running_lane(tmp_path: Path, lane_files: dict[str, str]) -> subprocess.CompletedProcess:
    """`background.sh wait 0` while lane g0 (the stub) runs, with `lane_files` (paths under HOME) written first."""
    repo, home, out = _checkout(tmp_path), tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    try:
        assert _start(repo, home, "g0", "0", kv_cache_gb="4").returncode == 0
        time.sleep(0.5)  # the stub lane writes its own files first
        for path, text in lane_files.items():
            (home / path).parent.mkdir(parents=True, exist_ok=True)
            (home / path).write_text(text)
        env = {**os.environ, "HOME": str(home), "OUT": str(out)}
        return subprocess.run(["bash", "tests/gpu/background.sh", "wait", "0"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        _stop_lanes(home)


def test_wait_packs_the_validation_dumps_of_a_run_still_running(tmp_path: Path) -> None:
    """A machine can be lost before a learning lane ends: `wait` brings back each run's validation dumps so far."""
    dump = '{"input": "a game", "score": 1.0}\n'
    done = _wait_beside_a_running_lane(tmp_path, {"alfworld_learning-g0/runs/gigpo_seed0/validation/0.jsonl": dump})
    assert done.returncode == 0, done.stderr
    assert "lane g0: still running" in done.stdout
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "out" / "lanes.tar.gz"), "-C", str(unpacked)], check=True)
    assert (unpacked / "validation" / "alfworld_learning-g0" / "gigpo_seed0" / "0.jsonl").read_text() == dump


def test_wait_shows_a_runs_last_step_and_its_first_error(tmp_path: Path) -> None:
    """`wait` prints each lane's last training step with its seconds, and the first error of a run that died."""
    console = (
        "(pid=1) UserWarning: megatron engine is not available: ModuleNotFoundError(\"No module\")\n"
        "(TaskRunnerV1 pid=2) step:1 - actor/lr:5e-05 - timing_s/step:99.4 - training/global_step:1\n"
        "(TaskRunnerV1 pid=2) step:2 - actor/lr:5e-05 - timing_s/step:50.5 - training/global_step:2\n"
        "(Worker pid=3) ERROR [executor.py:898] ValueError: invalid literal for int() with base 10: 'x'\n"
        "Error executing job with overrides: []\n")
    done = _wait_beside_a_running_lane(tmp_path, {"bg-out-g0/console.log": console})
    assert "last training step:2 timing_s/step:50.5\n" in done.stdout, done.stdout
    assert "first error: (Worker pid=3) ERROR [executor.py:898] ValueError: invalid literal" in done.stdout


def test_wait_fetches_a_folders_files_a_few_per_call_sums_first(tmp_path: Path) -> None:
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    parts = home / "sft_parts"
    parts.mkdir()
    for name in ("part01", "part00", "SHA256SUMS", "part02"):
        (parts / name).write_text(name)
    try:
        assert _start(repo, home, "s", None).returncode == 0
        (home / "bg-s.done").touch()

        def wait(call: int) -> tuple[list[str], str]:
            out = tmp_path / f"out{call}"
            out.mkdir()
            env = {**os.environ, "HOME": str(home), "OUT": str(out), "FETCH_PER_WAIT": "2"}
            done = subprocess.run(["bash", "tests/gpu/background.sh", "wait", "0", "--fetch", str(parts)],
                                  cwd=repo, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            fetched = sorted(p.name for p in (out / "fetch").iterdir())
            assert all((out / "fetch" / name).read_text() == name for name in fetched)
            return fetched, done.stdout.splitlines()[-1]

        assert wait(1) == (["SHA256SUMS", "part00"], f"fetched from {parts}: SHA256SUMS part00 ($OUT/fetch/); "
                                                      "2 left for later waits")
        assert wait(2)[0] == ["part01", "part02"]
        assert wait(3) == ([], f"fetched from {parts}: nothing new ($OUT/fetch/); 0 left for later waits")
    finally:
        _stop_lanes(home)


def test_once_the_done_lanes_are_packed_a_fetch_wait_brings_four_parts_and_no_logs(tmp_path: Path) -> None:
    """The first wait after every lane is done packs their logs; later `--fetch` waits give the whole call to parts."""
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    parts = home / "export"
    parts.mkdir()
    for name in ("SHA256SUMS", *(f"part{i:02d}" for i in range(10))):
        (parts / name).write_text(name)
    try:
        assert _start(repo, home, "g", None).returncode == 0

        def wait(call: int) -> tuple[list[str], bool]:
            out = tmp_path / f"out{call}"
            out.mkdir()
            env = {k: v for k, v in os.environ.items() if k != "FETCH_PER_WAIT"} | {"HOME": str(home), "OUT": str(out)}
            done = subprocess.run(["bash", "tests/gpu/background.sh", "wait", "0", "--fetch", str(parts)],
                                  cwd=repo, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            return sorted(p.name for p in (out / "fetch").iterdir()), (out / "lanes.tar.gz").exists()

        assert wait(1) == (["SHA256SUMS", "part00", "part01"], True)  # the lane still runs: logs and three
        (home / "bg-g.done").touch()
        assert wait(2) == (["part02", "part03", "part04"], True)  # the first wait that sees it done packs its logs
        assert wait(3) == (["part05", "part06", "part07", "part08"], False)
        assert _start(repo, home, "g", None).returncode == 0  # a new lane: its logs are packed again
        assert wait(4)[1]
    finally:
        _stop_lanes(home)


def test_wait_names_a_fetch_folder_that_does_not_exist(tmp_path: Path) -> None:
    repo, home = _checkout(tmp_path), tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "tests/gpu/background.sh", "wait", "--fetch", str(home / "nope")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout.strip() == f"wait --fetch {home / 'nope'}: no such folder"
