"""bench/rollout_overlap.py's two loops on the CPU, with a fake vLLM engine: lock-step really waits for every
running session before any generates, both loops play every step, and the end-of-answer bias reaches the engine."""
import argparse
import asyncio
import math
import sys
import time
import types

import pytest

import rollout_overlap
from alfworld_games import GAMES_ROOT
from tiny_models import make_tiny_qwen3

GAMES, GROUP, STEPS, CAP = 2, 2, 3, 16


class FakeEngine:
    """vLLM's AsyncLLM.generate: `max_tokens` tokens, or fewer ending in EOS when the EOS logit is biased; counts
    the requests in flight."""

    def __init__(self):
        self.in_flight, self.peak_in_flight, self.logit_biases = 0, 0, []

    async def generate(self, prompt, params, request_id):
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.logit_biases.append(params.logit_bias)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        length = params.max_tokens if params.logit_bias is None else params.max_tokens // 4
        yield types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[100] * length)])

    def shutdown(self):
        pass


@pytest.fixture
def fake_vllm(monkeypatch):
    engine = FakeEngine()
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda max_tokens, temperature, top_p, logit_bias: types.SimpleNamespace(
        max_tokens=max_tokens, logit_bias=logit_bias)
    vllm.AsyncEngineArgs = dict
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: prompt_token_ids
    async_llm = types.ModuleType("vllm.v1.engine.async_llm")
    async_llm.AsyncLLM = types.SimpleNamespace(from_engine_args=lambda engine_args: engine)
    for name, module in {"vllm": vllm, "vllm.inputs": inputs, "vllm.v1.engine.async_llm": async_llm}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return engine


def test_both_loops_play_every_step_and_lock_step_waits_for_all(tmp_path, fake_vllm):
    model = make_tiny_qwen3(tmp_path / "model")
    args = argparse.Namespace(model=str(model), games_root=str(GAMES_ROOT), games=GAMES, group=GROUP,
                              max_steps=STEPS, response=CAP, gpu_memory_utilization=0.5, eager=True,
                              eos_rates=[0.0, 0.25], pairs=2)
    result = asyncio.run(rollout_overlap.bench(args))

    fixed, varied = result["settings"]
    for setting in (fixed, varied):
        assert [(run["pair"], run["loop"]) for run in setting["runs"]] == [
            (0, "lock_step"), (0, "async"), (1, "lock_step"), (1, "async")]
        assert len(setting["pairs"]) == 2
        for run in setting["runs"]:
            assert run["step_samples"] == GAMES * GROUP * STEPS  # a random model never wins: every step is played
    assert all(run["mean_answer_tokens"] == CAP for run in fixed["runs"])
    # Equal answers everywhere: no loop can beat lock-step by decoding less.
    equal = {"lock_step": STEPS * CAP, "async": STEPS * CAP}
    assert all(run["decode_steps"] == equal for run in fixed["runs"])
    assert fixed["ratio_bound_from_answer_lengths"] == 1.0
    assert fixed["captured_share"] is None and fixed["captured_share_spread"] is None  # nothing to save
    assert all(run["mean_answer_tokens"] == CAP // 4 for run in varied["runs"])
    # The EOS bias that makes near-uniform logits end an answer with probability 0.25 per token.
    vocab = len(rollout_overlap.AutoTokenizer.from_pretrained(model))
    assert varied["eos_logit_bias"] == pytest.approx(math.log(0.25 * vocab / 0.75))
    assert fixed["eos_logit_bias"] is None and None in fake_vllm.logit_biases
    assert {tuple(bias.values()) for bias in fake_vllm.logit_biases if bias} == {(varied["eos_logit_bias"],)}


def test_lock_step_releases_a_step_only_when_every_running_session_asked(fake_vllm):
    async def scenario():
        server = rollout_overlap.EngineServer(fake_vllm)
        gate = rollout_overlap.LockStep(server, sessions=3)
        request = {"prompt_ids": [1], "sampling_params": {"max_tokens": 2, "temperature": 1.0}}
        first = [asyncio.ensure_future(gate.generate(f"r{i}", **request)) for i in range(2)]
        await asyncio.sleep(0.05)
        assert fake_vllm.peak_in_flight == 0  # two of three sessions asked: nothing generates yet
        gate.leave()  # the third session's episode ended: the two waiting go
        await asyncio.gather(*first)
        assert fake_vllm.peak_in_flight == 2

    asyncio.run(scenario())


def test_decode_steps_charge_lock_step_each_turns_longest_answer_and_async_its_longest_session():
    lengths = {"a": [10, 2], "b": [3, 8, 5], "c": [4]}  # b plays a third turn alone; c's episode ended after one
    assert rollout_overlap.decode_steps(lengths) == {"lock_step": 10 + 8 + 5, "async": 3 + 8 + 5}


def test_nvidia_smi_sampler_reads_every_gpu_line_and_has_none_without_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"  # two GPUs, two samples each, then it keeps sampling until stopped
    fake.write_text("#!/bin/sh\nprintf '10\\n30\\n20\\n60\\n'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with rollout_overlap.harness.NvidiaSmiSampler("memory.used") as sampler:
        time.sleep(0.5)
    assert sampler.samples == [10, 30, 20, 60] and sampler.mean() == 30 and sampler.peak() == 60

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with rollout_overlap.harness.NvidiaSmiSampler("memory.used") as sampler:
        pass
    assert sampler.mean() is None and sampler.peak() is None


def test_a_pair_captures_its_share_of_the_saving_its_answers_allow():
    lock = {"wall_s": 10.0, "decode_steps": {"lock_step": 100, "async": 60}}
    ours = {"wall_s": 8.0, "decode_steps": {"lock_step": 100, "async": 40}}
    # ratio 0.8; bound = mean(0.6, 0.4) = 0.5; captured = 0.2 / 0.5
    assert rollout_overlap.pair_summary(lock, ours) == {"ratio": 0.8, "bound": 0.5, "captured_share": 0.4}
    nothing_to_save = {"wall_s": 10.0, "decode_steps": {"lock_step": 50, "async": 50}}
    assert rollout_overlap.pair_summary(nothing_to_save, nothing_to_save)["captured_share"] is None
    assert rollout_overlap.median_and_spread([0.5, None, 0.7, 0.6]) == (0.6, [0.5, 0.7])
    assert rollout_overlap.median_and_spread([None]) == (None, None)
