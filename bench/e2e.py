"""One GiGPO iteration of the 4B-shaped Molmo2 on ALFWorld, timed per stage, with peak GPU memory.

    python bench/e2e.py [--games 8] [--group 4] [--max-steps 10] [--response 128] [--gpus 1] [--offload False]
                        [--model DIR] [--eager]

Makes a random Molmo2 checkpoint with Molmo2-4B's shapes (`make_checkpoint --size 4b-shape`) unless --model
names one, generates games, prepares the data and runs one iteration of
`examples/gigpo_trainer/run_alfworld_molmo2.sh` (Ray + FSDP + vLLM, weight sync included). From verl's console
line of that iteration it keeps the stage times — rollout (`gen`: the agent loop, generation and environment
together), log-probs (`old_log_prob`, `ref`), advantage (`adv`), update (`update_actor`), weight sync
(`update_weights`) — how a session's time splits between waiting for generation and for the environment (our
trainer's `agent/*`), and the peak GPU memory: the actor's (torch's counters, as verl logs them) and the node's
(nvidia-smi every 0.5 s: every process, vLLM included, on the fullest GPU). Writes them to
bench/results/e2e_<gpu>.json with the command. vLLM runs with CUDA graphs as training does, unless --eager.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
import vllm_harness as harness  # noqa: E402
from check_e2e_log import step_metrics  # noqa: E402  (verl's console lines, parsed once)
STAGES = {"rollout": "timing_s/gen", "log_probs": "timing_s/old_log_prob", "ref_log_probs": "timing_s/ref",
          "advantage": "timing_s/adv", "update": "timing_s/update_actor", "weight_sync": "timing_s/update_weights",
          "iteration": "timing_s/step"}
KEPT = re.compile(r"^(timing_s/|timing_per_token_ms/|perf/|actor/perf/|agent/|env/|gigpo/|response_length/|"
                  r"prompt_length/|training/rollout_)")


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


def iteration_metrics(log: str, step: int = 1) -> dict[str, float]:
    metrics = step_metrics(log).get(step)
    if metrics is None:
        raise SystemExit(f"no 'step:{step}' line in the training log")
    return {key: value for key, value in metrics.items() if KEPT.match(key)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=8, help="B, games per iteration")
    parser.add_argument("--group", type=int, default=4, help="G, sessions per game")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--response", type=int, default=128, help="max response tokens")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--offload", default="False", help="OFFLOAD of the launch script (True/False)")
    parser.add_argument("--model", help="an existing 4b-shape checkpoint (default: made under --work)")
    parser.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs (starts minutes sooner)")
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "molmo_agent_bench_e2e"))
    args = parser.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable

    model = pathlib.Path(args.model) if args.model else work / "model"
    if not (model / "config.json").exists():
        shell([py, "-m", "molmo_agent.models.molmo2.make_checkpoint", str(model), "--size", "4b-shape",
               "--device", "cuda"])
    if not (work / "games").exists():
        shell([py, "-m", "molmo_agent.envs.alfworld.generate", "--out", str(work / "games"), "--train",
               str(args.games), "--valid-seen", "1", "--valid-unseen", "1", "--seed", "0"])
    shell([py, "examples/data_preprocess/alfworld.py", "--data", str(work / "games"), "--out", str(work / "data")])

    env = {"MODEL_PATH": str(model), "DATA_DIR": str(work / "data"), "N_GPUS": str(args.gpus),
           "TRAIN_BATCH": str(args.games), "GROUP_SIZE": str(args.group), "MAX_STEPS": str(args.max_steps),
           "OFFLOAD": args.offload, "PYTHON": py}
    overrides = [f"data.max_response_length={args.response}", "data.max_prompt_length=2048",
                 "trainer.total_training_steps=1", "trainer.val_before_train=False", "trainer.test_freq=-1",
                 "trainer.save_freq=-1", "trainer.logger=[console]", "trainer.experiment_name=bench_e2e",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
                 "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
                 "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16",
                 f"actor_rollout_ref.rollout.enforce_eager={args.eager}"]
    command = ["bash", "examples/gigpo_trainer/run_alfworld_molmo2.sh", *overrides]
    start = time.perf_counter()
    with harness.NvidiaSmiSampler("memory.used", period_ms=500) as gpu_memory_mib:
        log = shell(command, log=work / "train.log", env=env)
    wall_s = time.perf_counter() - start
    metrics = iteration_metrics(log)
    node_peak_mib = gpu_memory_mib.peak()

    result = {
        "bench": "e2e",
        "command": " ".join(f"{k}={v}" for k, v in env.items() if k != "PYTHON") + " " + " ".join(command),
        "parameters": {"model": "Molmo2 4b-shape (random bf16)", "B": args.games, "G": args.group,
                       "max_steps": args.max_steps, "max_response_tokens": args.response, "gpus": args.gpus,
                       "offload": args.offload, "vllm_enforce_eager": args.eager},
        "stages_s": {stage: metrics.get(key) for stage, key in STAGES.items()},
        "session_wait_s": {k: v for k, v in metrics.items() if k.startswith("agent/")},
        # in GiB, as verl's actor/perf/*_gb are
        "peak_gpu_memory_gb": {**{k: v for k, v in metrics.items() if "max_memory" in k},
                               "nvidia_smi_memory_used": node_peak_mib and round(node_peak_mib / 1024, 1)},
        "process_wall_s": round(wall_s, 1),
        "metrics": metrics,
    }
    out = ROOT / "bench" / "results" / f"e2e_{harness.device_tag()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("stages_s", "session_wait_s", "peak_gpu_memory_gb")}, indent=2))
    print("wrote", out)
    dropped = metrics.get("env/dropped_episode_rate", 0.0)
    if dropped:
        sys.exit(f"env/dropped_episode_rate={dropped}: environments failed and their episodes were dropped, so "
                 f"these are not the times of a full iteration (see {work / 'train.log'})")


if __name__ == "__main__":
    main()
