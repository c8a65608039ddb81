"""vLLM's start-up and decode speed with torch.compile (verl's rollout default) and without it (run_alfworld.sh's
ROLLOUT_COMPILE=0), on one GPU.

    python bench/vllm_startup.py [--size small|4b-shape] [--batch 128] [--new-tokens 48] [--out ...]

Each mode starts its engine in a fresh process, with verl's environment for rollout servers
(VLLM_DISABLE_COMPILE_CACHE=1: every start compiles from nothing, as on a bare GPU node), on our random `--size`
checkpoint, with the compilation config verl's server would hand vLLM: `compile` = verl's default (vLLM's
torch.compile, `cudagraph_mode` FULL_AND_PIECEWISE); `no-compile` = the JSON run_alfworld.sh passes for
ROLLOUT_COMPILE=0 (read from the script, so the bench measures what the launcher sends). Start-up = seconds to
construct the engine (weights, compilation, CUDA-graph capture, KV cache). Decode = tokens per second of a batch
of random prompts, greedy, EOS ignored: the median of --repeats calls after a warm-up (vllm_molmo2.py's timing).
Results: bench/results/vllm_startup_<device>.json, per mode, with the start-up seconds saved and the decode ratio.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
import vllm_harness as harness  # noqa: E402
from vllm_molmo2 import random_prompts, timed_generate  # noqa: E402

from molmo_agent.models import molmo2  # noqa: E402

LAUNCHER = ROOT / "examples" / "gigpo_trainer" / "run_alfworld.sh"
MODES = ("compile", "no-compile")
VERL_DEFAULT_CUDAGRAPH_MODE = "FULL_AND_PIECEWISE"  # verl's vLLM server sets it when the config names none
RESULT_PREFIX = "vllm_startup result: "


def launcher_no_compile_config(script: Path = LAUNCHER) -> dict:
    """The compilation config run_alfworld.sh sends vLLM for ROLLOUT_COMPILE=0 (its `no_compile='{...}'` line)."""
    found = re.search(r"^no_compile='(\{.*\})'", script.read_text(), flags=re.MULTILINE)
    if not found:
        raise SystemExit(f"{script}: no `no_compile='{{...}}'` line: the ROLLOUT_COMPILE=0 config moved")
    return json.loads(found.group(1))


def compilation_config(mode: str) -> dict:
    """What verl's vLLM server passes as --compilation-config in `mode` (its default cudagraph_mode added)."""
    config = {} if mode == "compile" else launcher_no_compile_config()
    return {"cudagraph_mode": VERL_DEFAULT_CUDAGRAPH_MODE, **config}


def measure(mode: str, args: argparse.Namespace) -> dict:
    """Start an engine in `mode` in this process and time its start-up and decode."""
    molmo2.register()
    checkpoint = harness.make_checkpoint(args.root, args.size)
    config = compilation_config(mode)
    started = time.perf_counter()
    llm = harness.start_engine(checkpoint, eager=False, memory=args.memory,
                               max_len=args.prompt_len + args.new_tokens + 16, max_num_seqs=args.batch,
                               limit_mm_per_prompt={"image": 0, "video": 0}, compilation_config=config)
    startup = time.perf_counter() - started
    seconds = timed_generate(llm, random_prompts(args.batch, args.prompt_len), args.new_tokens, args.repeats)
    served = llm.llm_engine.vllm_config.compilation_config
    llm.llm_engine.engine_core.shutdown()
    return {"compilation_config": config, "served_mode": str(served.mode),
            "served_cudagraph_mode": str(served.cudagraph_mode), "startup_s": startup, "generate_s": seconds,
            "decode_tokens_per_s": args.batch * args.new_tokens / seconds}


def run_mode(mode: str, argv: list[str]) -> dict:
    """`measure(mode)` in a fresh process (a cold start each), with verl's rollout-server environment."""
    env = {**os.environ, "VLLM_DISABLE_COMPILE_CACHE": "1"}
    done = subprocess.run([sys.executable, __file__, *argv, "--child", mode], env=env, capture_output=True,
                          text=True)
    sys.stderr.write(done.stderr[-4000:])
    results = [line[len(RESULT_PREFIX):] for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not results:
        raise SystemExit(f"vllm_startup: mode {mode} failed (exit status {done.returncode}); its output above")
    return json.loads(results[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=("tiny", "small", "4b-shape"))
    parser.add_argument("--batch", type=int, default=128, help="sequences decoded together (the recipe's B x G)")
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", type=float, default=0.3, help="vLLM gpu_memory_utilization")
    parser.add_argument("--root", type=Path, default=Path.home() / "molmo2-checkpoints", help="checkpoint folder")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path, help="default: bench/results/vllm_startup_<device>.json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(args.child, args)), flush=True)
        os._exit(0)  # vLLM's engine threads can hold a normal exit

    argv = sys.argv[1:]
    modes = {mode: run_mode(mode, argv) for mode in args.modes}
    result = {
        "bench": "vllm_startup",
        "command": " ".join(["python3", "bench/vllm_startup.py", *argv]),
        "device": torch.cuda.get_device_name(),
        "host": platform.node(),
        "params": {"size": args.size, "batch": args.batch, "prompt_len": args.prompt_len,
                   "new_tokens": args.new_tokens, "repeats": args.repeats, "gpu_memory_utilization": args.memory,
                   "VLLM_DISABLE_COMPILE_CACHE": "1"},
        "modes": modes,
    }
    if set(modes) == set(MODES):
        result["startup_saved_s"] = modes["compile"]["startup_s"] - modes["no-compile"]["startup_s"]
        result["decode_no_compile_over_compile"] = (modes["no-compile"]["decode_tokens_per_s"]
                                                    / modes["compile"]["decode_tokens_per_s"])
    out = args.out or ROOT / "bench" / "results" / f"vllm_startup_{harness.device_tag()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(out.read_text())
    print(" ; ".join(f"{mode}: start-up {m['startup_s']:.0f} s, decode {m['decode_tokens_per_s']:.0f} tok/s "
                     f"({m['served_mode']}, {m['served_cudagraph_mode']})" for mode, m in modes.items())
          + f"; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
