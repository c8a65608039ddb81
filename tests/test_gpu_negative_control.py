"""The GPU suite's Sokoban negative control can tell: the e2e model's answers depend on the picture.

`tests/gpu/e2e.sh` with E2E_ENV=sokoban trains a tiny Molmo2 redrawn by `vllm_harness.resample_weights(...,
attention_gain=3)` and requires vLLM's token probabilities to correlate >= 0.95 with the trainer's, then < 0.95
once the trainer's pixels are zeroed. Both can hold only if zeroing the pixels moves the answers' probabilities far
more than bf16 rounding does: checked here on sampled answers to Sokoban first steps.
"""
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from molmo_agent.envs.sokoban.session import SokobanEnv
from molmo_agent.envs.sokoban.spec import SPEC
from vllm_harness import resample_weights

from check_e2e_log import MIN_CORRELATION


def sampled_answers(model, processor, seeds: range) -> list[tuple[dict, torch.Tensor, int]]:
    """(processor inputs, prompt + sampled answer ids, prompt length) of each seed's first Sokoban step."""
    samples = []
    for seed in seeds:
        observation, info = SokobanEnv().reset(options={"seed": seed})
        prompt = SPEC.prompt(observation["text"], info, [], 0)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, images=observation["images"])
        torch.manual_seed(seed)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=48, do_sample=True, temperature=1.0)
        samples.append((inputs, ids, inputs["input_ids"].shape[1]))
    return samples


def answer_probabilities(model, samples, zero_pixels: bool) -> torch.Tensor:
    """The answers' token probabilities under `model` (its dtype), with the real or zeroed pixels."""
    dtype = next(model.parameters()).dtype
    probabilities = []
    for inputs, ids, prompt_length in samples:
        images = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
        pixels = images["pixel_values"]
        images["pixel_values"] = (torch.zeros_like(pixels) if zero_pixels else pixels).to(dtype)
        with torch.no_grad():
            logits = model(input_ids=ids, **images).logits[0, prompt_length - 1 : -1].float()
        probabilities.append(torch.softmax(logits, -1).gather(-1, ids[0, prompt_length:, None])[:, 0])
    return torch.cat(probabilities)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def test_zeroed_pixels_move_the_answers_far_more_than_bf16_does(molmo2_dir, tmp_path):
    model_dir = resample_weights(Path(molmo2_dir), tmp_path / "model", seed=1, attention_gain=3)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    bf16 = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    samples = sampled_answers(model, processor, range(4))
    reference = answer_probabilities(model, samples, zero_pixels=False)
    assert correlation(reference, answer_probabilities(bf16, samples, zero_pixels=False)) > 0.98
    assert correlation(reference, answer_probabilities(model, samples, zero_pixels=True)) < 0.9 < MIN_CORRELATION
