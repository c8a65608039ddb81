"""Log-probs of a Molmo2 micro-batch as verl's FSDP engine computes them equal each sample's run alone.

The micro-batch holds two images of different crop counts and a text step. verl's engine
(`FSDPEngineWithLMHead.prepare_model_inputs` / `prepare_model_outputs`) either right-pads the samples
(`use_remove_padding=False`, our config) or packs them into one row (`True`), concatenates their image tensors
along dim 0 (`extract_multi_modal_inputs`), keeps each sample's valid logits, and scores them against the flat
token ids rolled by one. Those labels hold image-block ids (151936-151945), above the LM head's 151936 entries.
Both on SDPA and on flex attention (forward only: torch has no flex-attention backward on the CPU).
"""
import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from verl.utils.model import extract_multi_modal_inputs

from molmo_agent.integrations.verl.logprobs import logprobs_from_logits
from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration, tiny_config
from molmo_agent.models.molmo2.modeling import Molmo2Attention

from test_molmo2_processor import random_image

PAD_ID = 151643
IMAGE_KEYS = ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops")


@pytest.fixture(scope="module")
def model() -> Molmo2ForConditionalGeneration:
    torch.manual_seed(0)
    return Molmo2ForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def flex_model(model) -> Molmo2ForConditionalGeneration:
    """The same weights on flex attention: packed samples' document mask and image blocks in one block mask."""
    config = tiny_config()
    config._attn_implementation = "flex_attention"
    flex = Molmo2ForConditionalGeneration(config).eval()
    flex.load_state_dict(model.state_dict())
    return flex


@pytest.fixture(scope="module")
def samples(processor) -> list[dict[str, torch.Tensor]]:
    """Two image steps (2 and 3 crops) and a text step, as the processor returns them."""
    steps = [
        processor(images=[random_image(50, 60, seed=1)], text="<|image|>Push the box.", return_tensors="pt"),
        processor(images=[random_image(300, 500, seed=2)], text="<|image|>Go left.", return_tensors="pt"),
        processor(text="Nothing changed; go up.", return_tensors="pt"),
    ]
    samples = [{key: value for key, value in step.items() if key != "attention_mask"} for step in steps]
    assert [s["image_num_crops"].tolist() for s in samples[:2]] == [[2], [3]]
    return samples


def micro_batch_logits(model, samples: list[dict[str, torch.Tensor]], remove_padding: bool) -> torch.Tensor:
    """(total tokens, vocab) logits of the samples' valid tokens, in order, as verl's engine gathers them."""
    rows = [sample["input_ids"][0] for sample in samples]
    lengths = [len(row) for row in rows]
    images = extract_multi_modal_inputs([{key: s[key] for key in IMAGE_KEYS if key in s} for s in samples])
    if remove_padding:
        ids = torch.cat(rows)[None]
        positions = torch.cat([torch.arange(length) for length in lengths])[None]
        with torch.no_grad():
            return model(ids, position_ids=positions, use_cache=False, **images).logits[0]
    width = max(lengths)
    ids = torch.full((len(rows), width), PAD_ID)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    positions = torch.arange(width)[None] * mask  # verl pads position ids with 0
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, position_ids=positions, use_cache=False, **images).logits
    return torch.cat([logits[i, :length] for i, length in enumerate(lengths)])


@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
@pytest.mark.parametrize("remove_padding", [False, True], ids=["padded", "packed"])
def test_micro_batch_logprobs_equal_each_sample_alone(model, flex_model, samples, remove_padding, attention,
                                                       monkeypatch):
    decoder_calls = []  # the decoder's attention layers that ran on flex attention
    flex_attention = ALL_ATTENTION_FUNCTIONS._global_mapping["flex_attention"]

    def counting(module, *args, **kwargs):
        decoder_calls.append(isinstance(module, Molmo2Attention))
        return flex_attention(module, *args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flex_attention", counting)
    flat_ids = torch.cat([sample["input_ids"][0] for sample in samples])
    labels = torch.roll(flat_ids, shifts=-1)
    vocab = model.config.text_config.vocab_size
    assert (labels >= vocab).any()  # image-block ids are among the labels

    batch_model = flex_model if attention == "flex_attention" else model
    batched = logprobs_from_logits(micro_batch_logits(batch_model, samples, remove_padding), labels)
    # the decoder's layers ran on the implementation asked for, image blocks and all
    assert any(decoder_calls) == (attention == "flex_attention")

    assert batched.isfinite().all() and batched[labels >= vocab].eq(0).all()
    start = 0
    for sample in samples:  # each alone on SDPA, the reference
        with torch.no_grad():
            alone_logits = model(**sample, use_cache=False).logits[0]
        segment = slice(start, start + len(alone_logits))
        torch.testing.assert_close(
            batched[segment], logprobs_from_logits(alone_logits, labels[segment]), rtol=0, atol=1e-5
        )
        start = segment.stop
