"""GiGPO iterations of the 4B-shaped Molmo2 on ALFWorld or visual Sokoban: per-stage times of the steady state, MFU,
peak GPU memory.

    python bench/e2e.py [--env alfworld|sokoban] [--iterations 4] [--label LABEL] [--games 8] [--group 4]
                        [--max-steps 10|15] [--response 128] [--gpus 1] [--offload False] [--model DIR] [--eager]
                        [HYDRA_OVERRIDE ...]

Makes a random Molmo2 checkpoint with Molmo2-4B's shapes (`make_checkpoint --size 4b-shape`) unless --model names
one, generates games (Sokoban: levels), prepares the data and runs --iterations iterations of the environment's
launch script (`examples/gigpo_trainer/run_alfworld_molmo2.sh` or `run_sokoban_molmo2.sh`: Ray + FSDP + vLLM, weight
sync included; extra Hydra overrides are passed on). Sokoban's rows also give the image tokens of a step (one
378x378 picture through the checkpoint's processor) and `env/images_per_step`. From verl's console line of each
iteration it keeps the stage times — rollout (`gen`: the agent loop, generation and environment together), log-probs
(`old_log_prob`, `ref`), advantage (`adv`), update (`update_actor`), weight sync (`update_weights`) — verl's
`perf/mfu/actor`, and how a session's time splits between waiting for generation and for the environment (our
trainer's `agent/*`). The first iteration pays one-time costs (the allocator's pools, pinned host buffers,
first-call kernels), so it is reported apart (`first_iteration`); `steady_state` holds the medians over iterations
2..N. Peak GPU memory is over the run: the actor's (torch's counters, as verl logs them) and the node's (nvidia-smi
every 0.5 s: every process, vLLM included, on the fullest GPU). vLLM runs with CUDA graphs as training does, unless
--eager. `rollout_engine_bound` sets the steady rollout against what the engine alone needs: the longest session's
generated tokens (our trainer's `rollout/longest_session_*`) at the decode ms/step and prefill that
bench/vllm_molmo2.py measured on the bare engine (read from bench/results/vllm_molmo2_<gpu>.json: its
`decode_text_only` where the run served the model text-only, as the trainer does for environments without
pictures, else `decode`)
at the batch nearest B x G (goal: rollout <= 1.3x that bound).

bench/results/e2e_<gpu>.json (Sokoban: e2e_sokoban_<gpu>.json; on N > 1 GPUs <gpu>xN, e.g. e2e_h200x2.json)
holds a list of rows, one per run, each under its --label with the command, the speed switches it ran with
(SWITCHES: "0" turns a change off, unset is on) and its overrides; a run appends its row.
verl's own behaviour, for a baseline row measured with the same code:

    MOLMO_AGENT_FAST_LOGPROBS=0 MOLMO_AGENT_FAST_ENTROPY=0 MOLMO_AGENT_REF_ON_GPU=0 MOLMO_AGENT_RESPONSE_LOGITS=0 \
        python bench/e2e.py --label baseline actor_rollout_ref.ref.fsdp_config.model_dtype=fp32
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
import vllm_harness as harness  # noqa: E402
from molmo_agent.integrations.verl.eval_report import logged_steps  # noqa: E402
from molmo_agent.integrations.verl.text_only import TEXT_ONLY_ENGINE_KWARGS  # noqa: E402
STAGES = {"rollout": "timing_s/gen", "log_probs": "timing_s/old_log_prob", "ref_log_probs": "timing_s/ref",
          "advantage": "timing_s/adv", "update": "timing_s/update_actor", "weight_sync": "timing_s/update_weights"}
ITERATION, MFU = "timing_s/step", "perf/mfu/actor"
# our speed changes' switches (integrations/verl/logprobs.py, entropy.py, reference.py, response_logits.py,
# length_sorted.py, row_select.py, micro_batches.py, response_columns.py and trainer.py), passed to Ray's workers by
# the config
SWITCHES = ("MOLMO_AGENT_FAST_LOGPROBS", "MOLMO_AGENT_FAST_ENTROPY", "MOLMO_AGENT_REF_ON_GPU",
            "MOLMO_AGENT_RESPONSE_LOGITS", "MOLMO_AGENT_SORT_MICRO_BATCHES", "MOLMO_AGENT_FAST_ROW_SELECT",
            "MOLMO_AGENT_FAST_MICRO_BATCHES", "MOLMO_AGENT_FAST_RESPONSE_COLUMNS", "MOLMO_AGENT_ENGINE_FIELDS")
KEPT = re.compile(r"^(timing_s/|timing_per_token_ms/|perf/|actor/perf/|agent/|env/|gigpo/|response_length/|"
                  r"prompt_length/|training/rollout_|rollout/)")


def shell(command: list[str], log: pathlib.Path | None = None, env: dict | None = None) -> str:
    """Run `command` from the repository root; its output, written to `log` as it comes (a killed run keeps it)."""
    print("+", " ".join(command), flush=True)
    with tempfile.TemporaryFile("w+") if log is None else open(log, "w+") as sink:
        code = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=sink,
                              stderr=subprocess.STDOUT, text=True).returncode
        sink.seek(0)
        output = sink.read()
    if code:
        sys.exit(f"failed ({code}): {' '.join(command)}\n{output[-4000:]}")
    return output


def iteration_metrics(log: str, iterations: int) -> dict[int, dict[str, float]]:
    """Step -> the kept metrics of verl's console line of each of the `iterations` steps in the training log."""
    steps = logged_steps(log)
    missing = [step for step in range(1, iterations + 1) if step not in steps]
    if missing:
        raise SystemExit(f"no 'step:N' line in the training log for steps {missing} of 1..{iterations}")
    return {step: {key: value for key, value in steps[step].items() if KEPT.match(key)}
            for step in range(1, iterations + 1)}


def median_of(steps: list[dict[str, float]], key: str) -> float | None:
    values = [metrics[key] for metrics in steps if key in metrics]
    return statistics.median(values) if values else None


def summary(steps: list[dict[str, float]]) -> dict:
    """Iteration and stage seconds, actor MFU and session waits: the median over `steps` (one step: its values)."""
    waits = sorted({key for metrics in steps for key in metrics if key.startswith("agent/")})
    return {"iteration_s": median_of(steps, ITERATION),
            "stages_s": {stage: median_of(steps, key) for stage, key in STAGES.items()},
            "mfu_actor": median_of(steps, MFU),
            "session_wait_s": {key: median_of(steps, key) for key in waits}}


def peak_memory_gb(steps: dict[int, dict[str, float]]) -> dict[str, float]:
    """The highest of each of verl's `*max_memory*` counters (GiB) over the steps."""
    keys = sorted({key for metrics in steps.values() for key in metrics if "max_memory" in key})
    return {key: max(metrics[key] for metrics in steps.values() if key in metrics) for key in keys}


def steady(steps: dict[int, dict[str, float]]) -> list[dict[str, float]]:
    """The metrics of steps 2..N: the steady state, past step 1's one-time costs."""
    return [steps[step] for step in sorted(steps) if step >= 2]


def timings(steps: dict[int, dict[str, float]]) -> dict:
    """The row's measurements from each step's metrics (steps 1..N, N >= 2): step 1 apart, the medians over
    steps 2..N, the peak memory counters, and every step's metrics."""
    later = steady(steps)
    return {"first_iteration": summary([steps[1]]),
            "steady_state": {"iterations": len(later), **summary(later)},
            "peak_gpu_memory_gb": peak_memory_gb(steps),
            "metrics_per_iteration": steps}


def rollout_engine_bound(later: list[dict[str, float]], decode: dict | None, sessions: int) -> dict | None:
    """The steady-state rollout (`later`: the metrics of steps 2..N) against what the engine alone needs: the
    longest session's generated tokens, one engine decode step each, at the decode time bench/vllm_molmo2.py
    measured on the bare engine (`decode`, its result's `decode` object) at the batch nearest B x G, plus one
    prefill per step of that session (its 1-token call at that batch). None without a decode measurement."""
    if not decode or not decode.get("by_batch"):
        return None
    batch = min(decode["by_batch"], key=lambda size: abs(int(size) - sessions))
    measured = decode["by_batch"][batch]
    tokens = median_of(later, "rollout/longest_session_tokens")
    steps = median_of(later, "rollout/longest_session_steps")
    rollout = median_of(later, STAGES["rollout"])
    if tokens is None or steps is None or rollout is None:
        return None
    bound = (tokens * measured["ms_per_step"] + steps * measured["prefill_and_first_token_ms"]) / 1e3
    return {"longest_session_tokens": tokens, "longest_session_steps": steps, "decode_batch": int(batch),
            "decode_ms_per_step": measured["ms_per_step"],
            "prefill_ms_per_step": measured["prefill_and_first_token_ms"],
            "bound_s": bound, "rollout_s": rollout, "rollout_over_bound": rollout / bound}


def image_tokens_per_step(model: pathlib.Path, steps: dict[int, dict[str, float]]) -> float:
    """Image tokens in a Sokoban step's prompt: one picture's token block (the checkpoint's processor) times the
    median `env/images_per_step` of the run."""
    from transformers import AutoProcessor

    from molmo_agent.envs.sokoban.render import IMAGE_SIZE
    from molmo_agent.models.molmo2 import register

    register()
    block = AutoProcessor.from_pretrained(model).num_image_tokens(IMAGE_SIZE, IMAGE_SIZE)
    return block * statistics.median(metrics.get("env/images_per_step", 0.0) for metrics in steps.values())


def append_row(path: pathlib.Path, row: dict) -> None:
    """Add `row` to the result file's rows (the file is made if absent; earlier rows stay)."""
    rows = []
    if path.exists():
        rows = json.loads(path.read_text()).get("rows")
        if not isinstance(rows, list):
            raise SystemExit(f"{path} has no list of rows ({{'bench': 'e2e', 'rows': [...]}}): move it aside")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": "e2e", "rows": [*rows, row]}, indent=2) + "\n")


def result_path(env: str, device: str, gpus: int) -> pathlib.Path:
    """bench/results/e2e[_<env>]_<device>[x<gpus>].json: one file per environment, GPU model and GPU count."""
    name = "e2e" + ("" if env == "alfworld" else f"_{env}")
    return ROOT / "bench" / "results" / f"{name}_{device}{f'x{gpus}' if gpus > 1 else ''}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=("alfworld", "sokoban"), default="alfworld")
    parser.add_argument("--iterations", type=int, default=4, help="N >= 2: iteration 1 apart, medians of 2..N")
    parser.add_argument("--label", help="the row's name (default: the switches and overrides it ran with)")
    parser.add_argument("--games", type=int, default=8, help="B, games per iteration")
    parser.add_argument("--group", type=int, default=4, help="G, sessions per game")
    parser.add_argument("--max-steps", type=int, help="episode steps (default: ALFWorld 10, Sokoban 15)")
    parser.add_argument("--response", type=int, default=128, help="max response tokens")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--offload", default="False", help="OFFLOAD of the launch script (True/False)")
    parser.add_argument("--model", help="an existing 4b-shape checkpoint (default: made under --work)")
    parser.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs (starts minutes sooner)")
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "molmo_agent_bench_e2e"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed on to the launch script")
    args = parser.parse_args()
    args.max_steps = args.max_steps or {"alfworld": 10, "sokoban": 15}[args.env]
    if args.iterations < 2:
        parser.error(f"--iterations {args.iterations}: give 2 or more (the steady state is iterations 2..N)")
    switches = {name: os.environ.get(name, "1") for name in SWITCHES}
    label = args.label or " ".join([*(f"{k}={v}" for k, v in switches.items()), *args.overrides])
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable

    model = pathlib.Path(args.model) if args.model else work / "model"
    if not (model / "config.json").exists():
        shell([py, "-m", "molmo_agent.models.molmo2.make_checkpoint", str(model), "--size", "4b-shape",
               "--device", "cuda"])
    data = work / f"data_{args.env}"
    if args.env == "sokoban":
        if not (data / "train.parquet").exists():  # a level per session group of every iteration
            shell([py, "examples/data_preprocess/sokoban.py", "--out", str(data), "--train",
                   str(args.games * args.iterations), "--val", "4"])
    else:
        if not (work / "games").exists():
            shell([py, "-m", "molmo_agent.envs.alfworld.generate", "--out", str(work / "games"), "--train",
                   str(args.games), "--valid-seen", "1", "--valid-unseen", "1", "--seed", "0"])
        shell([py, "examples/data_preprocess/alfworld.py", "--data", str(work / "games"), "--out", str(data)])

    env = {"MODEL_PATH": str(model), "DATA_DIR": str(data), "N_GPUS": str(args.gpus),
           "TRAIN_BATCH": str(args.games), "GROUP_SIZE": str(args.group), "MAX_STEPS": str(args.max_steps),
           "OFFLOAD": args.offload, **switches, "PYTHON": py}
    overrides = [f"data.max_response_length={args.response}", "data.max_prompt_length=2048",
                 f"trainer.total_training_steps={args.iterations}", "trainer.val_before_train=False",
                 "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.logger=[console]",
                 "trainer.experiment_name=bench_e2e", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
                 "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
                 "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16",
                 f"actor_rollout_ref.rollout.enforce_eager={args.eager}", *args.overrides]
    command = ["bash", f"examples/gigpo_trainer/run_{args.env}_molmo2.sh", *overrides]
    start = time.perf_counter()
    with harness.NvidiaSmiSampler("memory.used", period_ms=500) as gpu_memory_mib:
        log = shell(command, log=work / "train.log", env=env)
    wall_s = time.perf_counter() - start
    steps = iteration_metrics(log, args.iterations)
    node_peak_mib = gpu_memory_mib.peak()

    row = {
        "label": label,
        "switches": switches,
        "overrides": args.overrides,
        "command": " ".join(f"{k}={v}" for k, v in env.items() if k != "PYTHON") + " " + " ".join(command),
        "parameters": {"env": args.env, "model": "Molmo2 4b-shape (random bf16)", "B": args.games, "G": args.group,
                       "max_steps": args.max_steps, "max_response_tokens": args.response, "gpus": args.gpus,
                       "offload": args.offload, "vllm_enforce_eager": args.eager, "iterations": args.iterations},
        **timings(steps),
        "process_wall_s": round(wall_s, 1),
        # other work on the node (another lane's run) slows the CPU-side stages: its 15-minute load average
        # against the cores says whether this row ran alone
        "node": {"cpus": os.cpu_count(), "load_average_15min": round(os.getloadavg()[2], 1)},
    }
    # in GiB, as verl's actor/perf/*_gb are
    row["peak_gpu_memory_gb"]["nvidia_smi_memory_used"] = node_peak_mib and round(node_peak_mib / 1024, 1)
    if args.env == "sokoban":
        row["image_tokens_per_step"] = image_tokens_per_step(model, steps)
    engine_bench = ROOT / "bench" / "results" / f"vllm_molmo2_{harness.device_tag()}.json"
    # the engine as this run served it: text-only if verl's printed vLLM arguments carry text_only.py's override
    text_only = json.dumps(TEXT_ONLY_ENGINE_KWARGS["hf_overrides"]) in log
    measured = "decode_text_only" if text_only else "decode"
    decode = json.loads(engine_bench.read_text()).get(measured) if engine_bench.exists() else None
    row["rollout_engine_bound"] = rollout_engine_bound(steady(steps), decode, args.games * args.group)
    if row["rollout_engine_bound"]:
        row["rollout_engine_bound"]["engine_measurement"] = f"{engine_bench.name}: {measured}"
    out = result_path(args.env, harness.device_tag(), args.gpus)
    append_row(out, row)
    print(json.dumps({k: row[k] for k in ("label", "first_iteration", "steady_state", "peak_gpu_memory_gb")},
                     indent=2))
    print("appended a row to", out)
    dropped = max(metrics.get("env/dropped_episode_rate", 0.0) for metrics in steps.values())
    if dropped:
        sys.exit(f"env/dropped_episode_rate={dropped}: environments failed and their episodes were dropped, so "
                 f"these are not the times of full iterations (see {work / 'train.log'})")


if __name__ == "__main__":
    main()
