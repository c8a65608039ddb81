"""bench/e2e.py's row on a synthetic training log as the GPU run prints it: iteration 1 apart, the steady state as
the medians over iterations 2..N, peak memory over the run; appending a row keeps the earlier ones."""
import importlib
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import e2e  # noqa: E402

PREFIX = "\x1b[36m(TaskRunnerV1 pid=2510)\x1b[0m "
# per step: iteration, reference log-probs, update seconds; actor MFU; the actor's peak allocation; generation wait
STEPS = {1: (164.0, 57.5, 47.3, 0.0, 89.9, 0.89), 2: (60.0, 3.0, 30.0, 0.21, 90.5, 0.80),
         3: (70.0, 4.0, 29.0, 0.20, 90.1, 0.70), 4: (50.0, 2.0, 31.0, 0.25, 90.2, 0.90)}


def step_line(step: int) -> str:
    iteration, ref, update, mfu, memory, wait = STEPS[step]
    metrics = {"timing_s/step": iteration, "timing_s/ref": ref, "timing_s/update_actor": update,
               "timing_s/gen": 20.0, "perf/mfu/actor": f"np.float64({mfu})",
               "actor/perf/max_memory_allocated_gb": memory, "agent/generate_seconds_per_step": wait,
               "actor/pg_loss": 0.1, "env/dropped_episode_rate": 0.0}
    return PREFIX + f"step:{step} - " + " - ".join(f"{k}:{v}" for k, v in metrics.items())


LOG = "\n".join(["(WorkerDict pid=7) loading", *(step_line(step) for step in STEPS), "Training finished"])


def test_first_iteration_apart_and_steady_state_medians_of_2_to_n():
    row = e2e.timings(e2e.iteration_metrics(LOG, 4))
    first, steady = row["first_iteration"], row["steady_state"]
    assert first["iteration_s"] == 164.0 and first["stages_s"]["ref_log_probs"] == 57.5 and first["mfu_actor"] == 0
    assert steady["iterations"] == 3
    assert steady["iteration_s"] == 60.0  # median of 60, 70, 50
    assert steady["stages_s"]["ref_log_probs"] == 3.0 and steady["stages_s"]["update"] == 30.0
    assert steady["stages_s"]["rollout"] == 20.0 and steady["stages_s"]["weight_sync"] is None  # not logged
    assert steady["mfu_actor"] == 0.21
    assert steady["session_wait_s"] == {"agent/generate_seconds_per_step": 0.8}
    assert row["peak_gpu_memory_gb"] == {"actor/perf/max_memory_allocated_gb": 90.5}  # over every iteration
    assert sorted(row["metrics_per_iteration"]) == [1, 2, 3, 4]
    assert "actor/pg_loss" not in row["metrics_per_iteration"][2], "a metric outside the kept groups"


def test_an_even_count_of_later_iterations_takes_the_middle_two():
    three = "\n".join(step_line(step) for step in (1, 2, 3))
    assert e2e.timings(e2e.iteration_metrics(three, 3))["steady_state"]["iteration_s"] == 65.0


def test_a_missing_iteration_is_named():
    log = "\n".join(step_line(step) for step in (1, 2, 4))
    with pytest.raises(SystemExit, match=r"steps \[3\] of 1..4"):
        e2e.iteration_metrics(log, 4)


def test_appending_a_row_keeps_the_earlier_rows(tmp_path):
    out = tmp_path / "e2e_h200.json"
    e2e.append_row(out, {"label": "baseline"})
    e2e.append_row(out, {"label": "fast logprobs"})
    saved = json.loads(out.read_text())
    assert saved["bench"] == "e2e" and [row["label"] for row in saved["rows"]] == ["baseline", "fast logprobs"]


def test_a_result_file_without_rows_is_refused_by_name(tmp_path):
    out = tmp_path / "e2e_h200.json"
    out.write_text(json.dumps({"bench": "e2e", "stages_s": {}}))
    with pytest.raises(SystemExit, match="e2e_h200.json has no list of rows"):
        e2e.append_row(out, {"label": "new"})
    assert "rows" not in json.loads(out.read_text())


def test_the_committed_result_file_takes_rows():
    rows = json.loads((ROOT / "bench" / "results" / "e2e_h200.json").read_text())["rows"]
    assert all("label" in row for row in rows)


def test_the_bench_switches_are_the_plugins():
    """Every `*SWITCH` constant of the verl seam, so that each row records it and the config passes it on."""
    modules = [importlib.import_module(f"molmo_agent.integrations.verl.{path.stem}")
               for path in (ROOT / "molmo_agent" / "integrations" / "verl").glob("*.py")]
    switches = {value for module in modules for name, value in vars(module).items()
                if name.endswith("SWITCH") and isinstance(value, str) and value.startswith("MOLMO_AGENT_")}
    assert len(e2e.SWITCHES) == len(switches) == 9 and set(e2e.SWITCHES) == switches


def test_sokoban_rows_count_one_pictures_image_tokens_per_step(molmo2_dir):
    steps = {1: {"env/images_per_step": 1.0}, 2: {"env/images_per_step": 1.0}, 3: {"env/images_per_step": 1.0}}
    tokens = e2e.image_tokens_per_step(molmo2_dir, steps)
    # One 378x378 crop: the 14x14 global view and a 1x1 crop grid of 14 rows of 14 patches plus a column token
    # each, with start/end tokens: the processor's own count.
    assert tokens == 2 + 14 * 14 + 2 + 14 * 15


def test_each_gpu_count_has_its_own_result_file():
    names = [e2e.result_path(env, "h200", gpus).name for env, gpus in
             (("alfworld", 1), ("alfworld", 2), ("sokoban", 1), ("sokoban", 2))]
    assert names == ["e2e_h200.json", "e2e_h200x2.json", "e2e_sokoban_h200.json", "e2e_sokoban_h200x2.json"]


def test_rollout_against_the_engine_bound_of_its_longest_session():
    decode = {"by_batch": {"32": {"ms_per_step": 10.0, "prefill_and_first_token_ms": 50.0},
                           "256": {"ms_per_step": 30.0, "prefill_and_first_token_ms": 400.0}}}
    steady = [{"timing_s/gen": 20.0, "rollout/longest_session_tokens": 1000.0, "rollout/longest_session_steps": 10.0},
              {"timing_s/gen": 24.0, "rollout/longest_session_tokens": 1200.0, "rollout/longest_session_steps": 10.0}]
    bound = e2e.rollout_engine_bound(steady, decode, sessions=8 * 4)
    # medians: 1100 tokens x 10 ms + 10 prefills x 50 ms = 11.5 s, against a 22 s rollout
    assert bound["decode_batch"] == 32 and bound["bound_s"] == pytest.approx(11.5)
    assert bound["rollout_over_bound"] == pytest.approx(22 / 11.5)
    assert e2e.rollout_engine_bound(steady, None, 32) is None  # no engine measurement to compare with
    assert e2e.rollout_engine_bound([{"timing_s/gen": 20.0}], decode, 32) is None  # a log without the metric


def test_the_config_passes_every_switch_to_rays_workers(monkeypatch):
    from hydra import compose, initialize_config_dir

    for name in e2e.SWITCHES:
        monkeypatch.setenv(name, "0")
    with initialize_config_dir(config_dir=str(ROOT / "molmo_agent" / "config"), version_base=None):
        config = compose("alfworld_gigpo", overrides=["actor_rollout_ref.model.path=/model"])
    env_vars = config.ray_kwargs.ray_init.runtime_env.env_vars
    assert {name: env_vars[name] for name in e2e.SWITCHES} == {name: "0" for name in e2e.SWITCHES}
