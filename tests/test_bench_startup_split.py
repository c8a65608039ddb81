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


def vllm_line(clock: str, message: str, process: str = "") -> str:
    """A vLLM 0.24 server's INFO line as it reaches a lane's console through Ray (no year in its stamp)."""
    return f"\x1b[36m(vLLMHttpServer pid=8361)\x1b[0m {process}INFO 12-02 {clock} [file.py:1] {message}"


def server_lines() -> list[str]:
    """One server's start-up between verl's actor line (06:39:10) and its rollout line (06:42:10)."""
    engine, worker = "(EngineCore pid=11245) ", "(Worker pid=12347) "
    return [vllm_line("06:39:47", "Enabling cumem allocator because sleep mode requires it."),
            vllm_line("06:39:55", "Resolved architecture: Molmo2ForConditionalGeneration"),
            vllm_line("06:40:41", "Initializing a V1 LLM engine (v0.24.0) with config: model='/m'", engine),
            vllm_line("06:41:12", "Starting to load model /m...", worker),
            vllm_line("06:41:14", "Model loading took 0.25 GiB memory and 0.946564 seconds", worker),
            vllm_line("06:41:29", "torch.compile and initial profiling/warmup run together took 11.72 s in total",
                      worker),
            vllm_line("06:41:41", "Graph capturing finished in 4 secs, took 0.04 GiB", worker),
            vllm_line("06:41:42", "init engine (profile, create kv cache, warmup model) took 28.41 s "
                      "(compilation: 11.72 s)", engine),
            vllm_line("06:42:08", "Multi-modal warmup completed in 16.465s")]


def test_vllms_own_start_up_lines_give_each_servers_seconds_and_split_the_rollout_phase():
    lines = run_lines(37)
    lines[4:4] = server_lines()  # after verl's actor line, before its rollout line
    (run,) = startup_split.startup_split("\n".join(["=== rl-grpo (06:37:30) ===", *lines]))
    assert run["vllm"] == {"weights_s": [0.946564], "compile_s": [11.72], "graph_capture_s": [4.0],
                           "init_engine_s": [28.41], "mm_warmup_s": [16.465]}
    assert run["phases"]["rollout"] == 180  # the servers' lines leave verl's phases as they were
    assert run["rollout_split"] == {"server_process": 37, "engine_process": 54, "worker_process": 31,
                                    "engine_init": 30, "api_server": 26, "handoff": 2}
    assert sum(run["rollout_split"].values()) == run["phases"]["rollout"]
    plain = startup_split.startup_split("\n".join(["=== rl-grpo (06:37:30) ===", *run_lines(37)]))[0]
    assert "vllm" not in plain and "rollout_split" not in plain


def test_a_server_line_missing_from_the_rollout_split_leaves_its_phase_to_the_next():
    lines = run_lines(37)
    lines[4:4] = [line for line in server_lines() if "Starting to load model" not in line]
    (run,) = startup_split.startup_split("\n".join(["=== rl-grpo (06:37:30) ===", *lines]))
    assert "worker_process" not in run["rollout_split"] and run["rollout_split"]["engine_init"] == 61
    assert sum(run["rollout_split"].values()) == run["phases"]["rollout"]


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
