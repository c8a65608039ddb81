"""Molmo2ForConditionalGeneration on a tiny random model (CPU): generation, training, masks, batching, errors."""
import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText

import molmo_agent.models.molmo2 as molmo2
from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration, tiny_config

from molmo2_case import SMALL_OVERRIDES, TOKEN_IDS, image_prompt

PATCH = TOKEN_IDS["image_patch_id"]


@pytest.fixture(scope="module")
def model() -> Molmo2ForConditionalGeneration:
    torch.manual_seed(0)
    return Molmo2ForConditionalGeneration(tiny_config(**SMALL_OVERRIDES)).eval()


def one_image(seed: int = 0, text: tuple[int, ...] = (8, 9)) -> dict[str, torch.Tensor]:
    return image_prompt(texts=[[5, 6], list(text)], grids=[(2, 2, 2, 4)], num_crops=[3], seed=seed)


def two_images(seed: int = 1) -> dict[str, torch.Tensor]:
    return image_prompt(texts=[[5], [7], [9, 10]], grids=[(2, 2, 2, 2), (2, 2, 2, 4)], num_crops=[2, 3], seed=seed)


def text_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """Image tokens are not predicted (the LM head covers the base vocabulary only)."""
    return torch.where(input_ids >= 1000, -100, input_ids)


def logits(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def test_images_change_the_logits(model):
    inputs = one_image()
    text_only = {"input_ids": torch.where(inputs["input_ids"] == PATCH, 7, inputs["input_ids"])}
    assert not torch.allclose(logits(model, **inputs), logits(model, **text_only))


@pytest.mark.parametrize("make_inputs", [lambda: {"input_ids": torch.tensor([[5, 17, 300, 42]])}, one_image])
def test_greedy_generate_with_kv_cache_equals_recomputing_the_whole_sequence(model, make_inputs):
    inputs = make_inputs()
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    ids = inputs["input_ids"]
    for _ in range(6):
        next_id = logits(model, **{**inputs, "input_ids": ids})[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(generated, ids)


def test_image_tokens_attend_to_each_other_and_text_stays_causal(model):
    inputs = one_image()
    ids = inputs["input_ids"][0]
    first_image, last_image = int((ids == TOKEN_IDS["low_res_image_start_token_id"]).nonzero()[0]), len(ids) - 3
    base = logits(model, **inputs)[0]

    later_image_token = inputs["input_ids"].clone()
    later_image_token[0, last_image] = TOKEN_IDS["image_low_res_id"]  # still an image token, another embedding
    changed = logits(model, **{**inputs, "input_ids": later_image_token})[0]
    assert not torch.allclose(changed[first_image], base[first_image])  # the block sees its later tokens

    later_text = inputs["input_ids"].clone()
    later_text[0, -1] = 11
    changed = logits(model, **{**inputs, "input_ids": later_text})[0]
    assert torch.equal(changed[:-1], base[:-1])  # nothing earlier sees a later text token


def pad_right(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def concatenated_image_inputs(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """What verl does with per-sample multimodal tensors: torch.cat along dim 0, nothing else."""
    keys = ["pixel_values", "image_token_pooling", "image_grids", "image_num_crops"]
    return {key: torch.cat([sample[key] for sample in samples]) for key in keys}


def test_batched_samples_with_dim0_concatenated_images_equal_each_sample_alone(model):
    samples = [one_image(seed=3), two_images(seed=4)]
    ids, mask = pad_right([s["input_ids"][0] for s in samples])
    batched = logits(model, input_ids=ids, attention_mask=mask, **concatenated_image_inputs(samples))
    for i, sample in enumerate(samples):
        alone = logits(model, **sample)[0]
        torch.testing.assert_close(batched[i, : len(alone)], alone, rtol=1e-5, atol=1e-5)


def test_packed_sequences_as_verl_remove_padding_sends_them_equal_each_sample_alone(model):
    samples = [one_image(seed=5), two_images(seed=6)]
    ids = torch.cat([s["input_ids"][0] for s in samples])[None]
    positions = torch.cat([torch.arange(s["input_ids"].shape[1]) for s in samples])[None]
    packed = logits(model, input_ids=ids, position_ids=positions, **concatenated_image_inputs(samples))[0]
    start = 0
    for sample in samples:
        alone = logits(model, **sample)[0]
        torch.testing.assert_close(packed[start : start + len(alone)], alone, rtol=1e-5, atol=1e-5)
        start += len(alone)


def test_loss_backward_reaches_the_vision_tower_with_finite_gradients(model):
    model.train()
    try:
        inputs = one_image()
        loss = model(**inputs, labels=text_labels(inputs["input_ids"]), use_cache=False).loss
        loss.backward()
    finally:
        model.eval()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())
    for name in [
        "model.vision_backbone.image_vit.patch_embedding.weight",
        "model.vision_backbone.image_vit.transformer.resblocks.0.attention.wq.weight",
        "model.vision_backbone.image_pooling_2d.wq.weight",
        "model.vision_backbone.image_projector.w1.weight",
        "model.transformer.blocks.0.self_attn.att_proj.weight",
    ]:
        assert grads[name].abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients(model):
    def patch_embedding_grad(checkpointing: bool) -> torch.Tensor:
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        try:
            inputs = one_image()
            model(**inputs, labels=text_labels(inputs["input_ids"]), use_cache=False).loss.backward()
            grad = model.model.vision_backbone.image_vit.patch_embedding.weight.grad.clone()
        finally:
            model.zero_grad(set_to_none=True)
            model.gradient_checkpointing_disable()
            model.eval()
        return grad

    torch.testing.assert_close(patch_embedding_grad(True), patch_embedding_grad(False))


@pytest.mark.parametrize("images", ["one more", "one fewer"])
def test_images_and_placeholders_that_disagree_raise_one_clear_error(model, images):
    samples = [one_image(seed=7), one_image(seed=8)]
    if images == "one more":
        ids = samples[0]["input_ids"]
    else:
        ids = torch.cat([samples[0]["input_ids"], samples[0]["input_ids"], samples[1]["input_ids"]], dim=1)
    with pytest.raises(ValueError, match="<im_patch> positions but the images give"):
        model(input_ids=ids, **concatenated_image_inputs(samples), use_cache=False)


def test_save_and_load_keep_the_released_names_and_need_no_remote_code(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_molmo2.Molmo2ForConditionalGeneration"}
    (tmp_path / "config.json").write_text(json.dumps(config))  # as released: points at remote code we do not have
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert {"model.transformer.wte.embedding", "model.transformer.wte.new_embedding"} <= set(f.keys())
    molmo2.register()
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(loaded) is Molmo2ForConditionalGeneration
    inputs = two_images()
    assert torch.equal(logits(loaded, **inputs), logits(model, **inputs))


def test_resize_token_embeddings_keeps_old_rows_and_starts_new_rows_at_the_mean():
    model = Molmo2ForConditionalGeneration(tiny_config(**SMALL_OVERRIDES))
    wte = model.get_input_embeddings()
    old = torch.cat([wte.embedding, wte.new_embedding]).detach().clone()
    model.resize_token_embeddings(len(old) + 3)
    new = torch.cat([wte.embedding, wte.new_embedding]).detach()
    assert torch.equal(new[: len(old)], old)
    torch.testing.assert_close(new[len(old) :], old.mean(0).expand(3, -1))
    assert model.config.text_config.additional_vocab_size == 16 + 3
    assert model(input_ids=torch.tensor([[len(new) - 1]]), use_cache=False).logits.shape[-1] == 1000


def test_logits_positions_compute_the_head_at_those_positions_only(model):
    input_ids = torch.tensor([[5, 17, 300, 42, 8], [9, 10, 11, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    positions = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    full = logits(model, input_ids=input_ids, attention_mask=attention_mask)
    some = logits(model, input_ids=input_ids, attention_mask=attention_mask, logits_positions=positions)
    assert some.shape == (3, full.shape[-1])
    torch.testing.assert_close(some, full[positions])  # row-major: (0, 2), (0, 3), (1, 1)
    with pytest.raises(ValueError, match="logits_positions and labels exclude each other"):
        model(input_ids=input_ids, labels=input_ids, logits_positions=positions)
