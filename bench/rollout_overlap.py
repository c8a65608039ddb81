"""Rollout wall time: our asynchronous agent loop vs a lock-step loop, over the same vLLM engine, pool and games.

    python bench/rollout_overlap.py --model DIR [--games 8] [--group 4] [--max-steps 10] [--response 128]
                                    [--eos-rates 0,0.016] [--pairs 5] [--eager]

Async (ours): each of the B×G sessions generates as soon as its environment answered and steps its environment
as soon as its answer is decoded, so generation of some sessions overlaps environment steps of others, and short
episodes free the engine early. Lock-step (verl-agent's multi-turn rollout): every step waits until all running
sessions have their prompt, then generates for all of them as one batch, then steps all environments. Both run
the same `EnvAgentLoop` code; lock-step only adds a barrier in front of `generate`. Prefix caching is on. The
goal is async wall time <= 0.6 × lock-step's; the GPU's busy fraction (nvidia-smi, 100 ms samples) is reported
for each run. Writes bench/results/rollout_overlap_<gpu>.json.

A random-weight model never ends an answer on its own: every answer runs to the cap, every step of lock-step
waits as long as any other, and only the environment's short steps are left to overlap. A trained policy's
answers vary in length. Each rate P of --eos-rates replays both loops with a logit bias on the end-of-sequence
token that makes a random model end its answer after each token with probability ~P (0: no bias; 0.016: answers
of ~50 tokens on average under the 128 cap) — the same sampling settings for both loops, measured lengths
reported.

Each run also reports the decode steps its answers would cost each loop if an engine step took the same time at
any batch size and nothing else took time (`decode_steps`): lock-step pays the longest answer of every turn,
async the longest session. Their ratio (`ratio_bound_from_answer_lengths`) is the best any asynchronous loop can
do with these lengths; the measured ratio is set against it.

Sampled answers differ from run to run, so each setting plays --pairs pairs (lock-step, then async) and reports
the medians over pairs with their spread (min, max): the wall-time ratio, its bound, and the captured share of
the achievable saving, (1 - ratio) / (1 - bound) (none where the bound leaves nothing to save).
"""
import argparse
import asyncio
import json
import math
import pathlib
import statistics
import sys
import time
from collections import defaultdict
from uuid import uuid4

from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from molmo_agent.integrations.verl.agent_loop import EnvAgentLoop

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
import vllm_harness as harness  # noqa: E402

GOAL = 0.6


class EngineServer:
    """verl's `server_manager.generate` on one in-process vLLM engine."""

    def __init__(self, engine, logit_bias: dict[int, float] | None = None):
        self.engine = engine
        self.logit_bias = logit_bias
        self.answer_lengths: dict[str, list[int]] = defaultdict(list)  # per session (request id), turn by turn

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=sampling_params["max_tokens"], temperature=sampling_params["temperature"],
                                top_p=sampling_params.get("top_p", 1.0), logit_bias=self.logit_bias)
        final = None
        async for final in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params,
                                                request_id=uuid4().hex):
            pass
        token_ids = list(final.outputs[0].token_ids)
        self.answer_lengths[request_id].append(len(token_ids))
        return TokenOutput(token_ids=token_ids)


def decode_steps(answer_lengths: dict[str, list[int]]) -> dict[str, int]:
    """Engine steps that decoding these answers costs each loop, if a step costs the same at any batch size:
    lock-step pays the longest answer of each turn, async the longest session's answers end to end."""
    turns = max(map(len, answer_lengths.values()))
    lock_step = sum(max(lengths[turn] for lengths in answer_lengths.values() if turn < len(lengths))
                    for turn in range(turns))
    return {"lock_step": lock_step, "async": max(map(sum, answer_lengths.values()))}


class LockStep:
    """A barrier in front of `generate`: a step's generation starts when every running session asked for it."""

    def __init__(self, server: EngineServer, sessions: int):
        self.server, self.running, self.waiting = server, sessions, []

    async def generate(self, request_id, **kwargs) -> TokenOutput:
        gate = asyncio.get_running_loop().create_future()
        self.waiting.append(gate)
        self._release_if_all_arrived()
        await gate
        return await self.server.generate(request_id, **kwargs)

    def leave(self) -> None:
        self.running -= 1
        self._release_if_all_arrived()

    def _release_if_all_arrived(self) -> None:
        if self.waiting and len(self.waiting) >= self.running:
            for gate in self.waiting:
                gate.set_result(None)
            self.waiting = []


async def rollout(config, tokenizer, server, rows: list[dict], lock_step: bool) -> tuple[float, int]:
    """Wall seconds and step samples of one batch: every row played by G sessions at once."""
    group = config.actor_rollout_ref.rollout.n
    gate = LockStep(server, len(rows) * group) if lock_step else None
    params = {"temperature": 1.0, "top_p": 1.0}

    async def session(row: dict, index: int) -> int:
        loop = EnvAgentLoop(trainer_config=DictConfigWrap(config), server_manager=gate or server,
                            tokenizer=tokenizer, processor=None, dataset_cls=RLHFDataset,
                            data_config=DictConfigWrap(config.data))
        try:
            return len(await loop.run(params, **row, session_id=index))
        finally:
            if gate:
                gate.leave()

    start = time.perf_counter()
    samples = await asyncio.gather(*(session(row, i) for row in rows for i in range(group)))
    return time.perf_counter() - start, sum(samples)


async def bench(args) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "molmo_agent" / "config"), version_base=None):
        config = compose("alfworld_gigpo", overrides=[
            f"actor_rollout_ref.model.path={args.model}", "data.train_files=unused", "data.val_files=unused",
            f"data.train_batch_size={args.games}", f"actor_rollout_ref.rollout.n={args.group}",
            "actor_rollout_ref.rollout.agent.num_workers=1", f"env.max_steps={args.max_steps}",
            f"data.max_response_length={args.response}", "data.max_prompt_length=2048"])
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
        model=args.model, enable_prefix_caching=True, gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=2048 + args.response, seed=0,
        enforce_eager=args.eager))
    games = sorted(str(p) for p in pathlib.Path(args.games_root).rglob("game.tw-pddl"))[: args.games]
    if len(games) < args.games:
        sys.exit(f"{args.games_root} holds {len(games)} games, {args.games} wanted")
    rows = [{"uid": f"g{i}", "extra_info": {"game": game, "task_type": "unknown", "index": i}}
            for i, game in enumerate(games)]

    await rollout(config, tokenizer, EngineServer(engine), rows[:1], lock_step=False)  # warm-up: graphs, env workers
    settings = [await compare(config, tokenizer, engine, rows, rate, args.pairs) for rate in args.eos_rates]
    engine.shutdown()
    return {"settings": settings, "goal": f"<= {GOAL}"}


def pair_summary(lock: dict, ours: dict) -> dict:
    """One pair's wall-time ratio (async over lock-step), its bound from both runs' answer lengths, and the share
    of the achievable saving captured (None when the bound is 1: nothing to save)."""
    ratio = ours["wall_s"] / lock["wall_s"]
    bound = statistics.mean(run["decode_steps"]["async"] / run["decode_steps"]["lock_step"] for run in (lock, ours))
    captured = (1 - ratio) / (1 - bound) if bound < 1 else None
    return {"ratio": round(ratio, 3), "bound": round(bound, 3),
            "captured_share": None if captured is None else round(captured, 3)}


def median_and_spread(values: list[float | None]) -> tuple[float | None, list[float] | None]:
    """The median and [min, max] of the values that are not None (None, None when none is)."""
    present = [value for value in values if value is not None]
    return (statistics.median(present), [min(present), max(present)]) if present else (None, None)


async def compare(config, tokenizer, engine, rows: list[dict], eos_rate: float, pairs: int) -> dict:
    """`pairs` pairs of runs (lock-step, then async) with answers ending after each token with probability
    ~`eos_rate`: each run, each pair's summary, and their medians and spreads."""
    vocab = len(tokenizer)
    bias = math.log(eos_rate * vocab / (1 - eos_rate)) if eos_rate > 0 else None
    server = EngineServer(engine, None if bias is None else {tokenizer.eos_token_id: bias})
    runs, summaries = [], []
    for pair in range(pairs):
        played = {}
        for name, lock_step in (("lock_step", True), ("async", False)):
            server.answer_lengths.clear()
            with harness.NvidiaSmiSampler("utilization.gpu") as busy:  # the share of time a kernel ran
                wall, samples = await rollout(config, tokenizer, server, rows, lock_step)
            generated = sum(map(sum, server.answer_lengths.values()))
            played[name] = {"pair": pair, "loop": name, "wall_s": round(wall, 2), "step_samples": samples,
                            "generated_tokens": generated, "mean_answer_tokens": round(generated / max(samples, 1), 1),
                            "decode_steps": decode_steps(server.answer_lengths),
                            "gpu_busy_fraction": None if busy.mean() is None else round(busy.mean() / 100, 3)}
            print(f"eos rate {eos_rate}:", played[name], flush=True)
        runs += played.values()
        summaries.append(pair_summary(played["lock_step"], played["async"]))
    ratio, ratio_spread = median_and_spread([s["ratio"] for s in summaries])
    bound, bound_spread = median_and_spread([s["bound"] for s in summaries])
    captured, captured_spread = median_and_spread([s["captured_share"] for s in summaries])
    return {"eos_rate": eos_rate, "eos_logit_bias": bias, "runs": runs, "pairs": summaries,
            "ratio_async_over_lock_step": ratio, "ratio_spread": ratio_spread, "met": ratio <= GOAL,
            "ratio_bound_from_answer_lengths": bound, "bound_spread": bound_spread,
            "captured_share": captured, "captured_share_spread": captured_spread}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (e.g. make_checkpoint --size 4b-shape)")
    parser.add_argument("--games-root", required=True, help="a game tree (generate.py --out)")
    parser.add_argument("--games", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--response", type=int, default=128)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8)
    parser.add_argument("--eos-rates", type=lambda text: [float(r) for r in text.split(",")], default=[0.0, 0.016],
                        help="comma-separated end-of-answer probabilities per token (0: the model's own)")
    parser.add_argument("--pairs", type=int, default=5, help="pairs of runs (lock-step, async) per setting")
    parser.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs (skips minutes of compiling)")
    parser.add_argument("--machine", help="suffix of the result file (default: the GPU, e.g. h100)")
    args = parser.parse_args()
    result = {"bench": "rollout_overlap", "command": " ".join([sys.executable, *sys.argv]),
              "parameters": vars(args), **asyncio.run(bench(args))}
    out = ROOT / "bench" / "results" / f"rollout_overlap_{args.machine or harness.device_tag()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: {setting["eos_rate"]: setting[key] for setting in result["settings"]}
                      for key in ("ratio_async_over_lock_step", "ratio_bound_from_answer_lengths", "captured_share")}
                     | {"goal": result["goal"]}), "->", out)


if __name__ == "__main__":
    main()
