"""bench/startup_split.py on start-up lines as a lane's console and a run's own log hold them."""
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import startup_split  # noqa: E402

RAY_PREFIX = "\x1b[36m(TaskRunnerV1 pid=7554)\x1b[0m "


def verl_line(clock: str, message: str, prefix: str = RAY_PREFIX) -> str:
    """A line in verl's `set_basic_config` format (`%(levelname)s:%(asctime)s:%(message)s`), printed through Ray."""
    return f"{prefix}INFO:2026-12-02 {clock},123:{message}"


def run_lines(minute: int, with_rollout: bool = True) -> list[str]:
    """A run's start-up lines from :MM:30 on, each phase a whole number of seconds after the last."""
    def at(second: int) -> str:
        return f"06:{minute + second // 60:02d}:{second % 60:02d}"
    lines = [f"2026-12-02 {at(45)},931\tINFO worker.py:2024 -- Started a local Ray instance.",
             "(pid=1) UserWarning: torchtitan engine is not available",
             verl_line(at(100), "train and validate dataloader initialized, train dataset size: 1000"),
             verl_line(at(130), "actor and ref model engine initialized")]
    if with_rollout:
        lines.append(verl_line(at(310), "checkpoint engine manager initialized"))
    return lines + [verl_line(at(312), "all initialize finished, ready to fit"),
                    verl_line(at(350), "alfworld environment pool: 16 slots on 2 worker processes, 0.1 CPU each",
                              prefix="\x1b[36m(AgentLoopWorker pid=9)\x1b[0m ")]


def test_each_marker_starts_a_run_split_at_verls_timestamped_lines():
    log = "\n".join(["=== games (06:36:00) ===", "=== rl-gigpo (06:37:30) ===", *run_lines(37),
                     "=== rl-grpo (06:50:30) ===", *run_lines(50, with_rollout=False)])
    gigpo, grpo = startup_split.startup_split(log)
    assert (gigpo["run"], gigpo["start"], gigpo["started"]) == ("rl-gigpo", "marker", "2026-12-02T06:37:30")
    assert gigpo["phases"] == {"launch": 15, "task_runner": 55, "actor": 30, "rollout": 180, "resume": 2,
                               "agent_loop": 38}
    assert gigpo["total_s"] == 320
    # a missing line: the next phase spans both, and the total stays the same
    assert "rollout" not in grpo["phases"] and grpo["phases"]["resume"] == 182 and grpo["total_s"] == 320


def test_vllms_own_start_up_lines_give_each_servers_seconds():
    server = "\x1b[36m(EngineCore_DP0 pid=212)\x1b[0m INFO 12-02 06:41:40 "
    lines = run_lines(37)
    lines[3:3] = [server + "[default_loader.py:262] Loading weights took 0.41 seconds",
                  server + "[backends.py:215] torch.compile takes 21.5 s in total",
                  server + "[gpu_model_runner.py:4583] Graph capturing finished in 38 secs, took 0.52 GiB",
                  server + "[core.py:210] init engine (profile, create kv cache, warmup model) took 71.23 seconds",
                  server + "[core.py:210] init engine took 70.62 s (compilation: 42.18 s)"]  # a newer vLLM's
    (run,) = startup_split.startup_split("\n".join(["=== rl-grpo (06:37:30) ===", *lines]))
    assert run["vllm"] == {"weights_s": [0.41], "compile_s": [21.5], "graph_capture_s": [38.0],
                           "init_engine_s": [71.23, 70.62]}
    assert run["phases"]["rollout"] == 180  # the lines of the servers leave verl's phases as they were
    assert "vllm" not in startup_split.startup_split("\n".join(["=== rl-grpo (06:37:30) ===", *run_lines(37)]))[0]


def test_a_runs_own_log_starts_at_its_first_timestamped_line():
    log = "\n".join([verl_line("06:37:35", "verl's logprobs_from_logits_v2: falls back", prefix=""),
                     *run_lines(37)])
    (run,) = startup_split.startup_split(log)
    assert run["start"] == "first line" and run["phases"]["launch"] == 10 and run["total_s"] == 315


def test_main_writes_medians_and_leaves_out_logs_without_start_up_lines(tmp_path, capsys):
    lane, bare = tmp_path / "console.log", tmp_path / "bare.log"
    lane.write_text("\n".join(["=== rl-gigpo (06:37:30) ===", *run_lines(37)]))
    bare.write_text("step:1 - timing_s/gen:30.0\n")
    out = tmp_path / "split.json"
    startup_split.main([str(lane), str(bare), "--out", str(out)])
    result = json.loads(out.read_text())
    assert list(result["runs"]) == [str(lane)] and "left out" in capsys.readouterr().out
    assert result["median_s"]["rollout"] == 180 and result["median_s"]["total"] == 320
    with pytest.raises(SystemExit, match="no log held"):
        startup_split.main([str(bare)])
