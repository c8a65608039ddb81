"""vLLM 0.24's Molmo2, with weight loading that takes any split of the checkpoint across calls.

Registered under the checkpoint's architecture name, so it replaces the stock class. Two changes:
- `load_weights`: checks every tensor against the checkpoint layout, copies `wte.embedding` and
  `wte.new_embedding` straight into their rows of the merged embedding (see `weights.py`), and leaves all other
  tensors to the stock loader. verl's bucketed weight sync calls `load_weights` once per bucket.
- `_process_image_input`: the released Molmo2 (and our transformers model, which the trainer runs) ADDS the
  pooled image features to the `<im_patch>` token embeddings; vLLM 0.24 replaces them, so rollout and trainer
  log-probabilities of image prompts would differ. We add, as the released model does.
It is also registered with a multimodal processor that accepts token prompts whose image blocks are already
expanded (verl sends the trainer's ids; see `prompt_ids.py`) and that declares images only (no video).
"""
from collections.abc import Iterable, Mapping
from functools import cached_property

import torch
from vllm.model_executor.models import molmo2 as vllm_molmo2
from vllm.model_executor.models.utils import AutoWeightsLoader
from vllm.multimodal import MULTIMODAL_REGISTRY

from molmo_agent.integrations.vllm.prompt_ids import collapse_image_blocks
from molmo_agent.integrations.vllm.weights import checkpoint_layout, copy_rows_into_shard, route_weights

MERGED_EMBEDDING = "model.embed_tokens.weight"


class Molmo2ImageProcessingInfo(vllm_molmo2.Molmo2ProcessingInfo):
    """Images only: our processor has no video processor, so vLLM must not profile (or accept) videos."""

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}


class Molmo2ExpandedPromptProcessor(vllm_molmo2.Molmo2MultiModalProcessor):
    """vLLM's Molmo2 processing, taking token prompts with expanded image blocks too."""

    def _apply_hf_processor_tokens_only(self, prompt_tokens: list[int]) -> list[int]:
        """Collapse expanded image blocks, then the stock step (prepend the BOS when missing: vLLM tokenizes
        string prompts without it, and our processor, like the released one, always starts with it)."""
        config = self.info.get_hf_config()
        placeholder_id = self.info.get_tokenizer().convert_tokens_to_ids(vllm_molmo2.IMAGE_PROMPT)
        collapsed = collapse_image_blocks(
            prompt_tokens, placeholder_id, config.low_res_image_start_token_id, config.image_end_token_id
        )
        return super()._apply_hf_processor_tokens_only(collapsed)


@MULTIMODAL_REGISTRY.register_processor(
    Molmo2ExpandedPromptProcessor,
    info=Molmo2ImageProcessingInfo,
    dummy_inputs=vllm_molmo2.Molmo2DummyInputsBuilder,
)
class Molmo2ForConditionalGeneration(vllm_molmo2.Molmo2ForConditionalGeneration):
    """vLLM Molmo2 whose `load_weights` accepts any subset of the checkpoint per call."""

    @cached_property
    def checkpoint_layout(self) -> dict[str, tuple[int, ...]]:
        """Checkpoint name -> shape, built once per process from the served config."""
        return checkpoint_layout(self.config)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load any subset of the checkpoint (checkpoint names); return the vLLM names of the loaded parameters."""
        rows = self.model.embed_tokens.shard_indices  # this rank's rows of the merged table, before its padding
        shard = self.model.embed_tokens.weight.data[: rows.org_vocab_end_index - rows.org_vocab_start_index]
        wrote_embedding = False

        def write_embedding_rows(table: torch.Tensor, table_start: int) -> None:
            nonlocal wrote_embedding
            copy_rows_into_shard(shard, rows.org_vocab_start_index, table, table_start)
            wrote_embedding = True

        text_config = self.config.text_config
        others = route_weights(weights, self.checkpoint_layout, text_config.vocab_size, write_embedding_rows)
        loaded = AutoWeightsLoader(self).load_weights(others, mapper=self.hf_to_vllm_mapper)
        return (loaded | {MERGED_EMBEDDING}) if wrote_embedding else loaded

    def _process_image_input(self, image_input: vllm_molmo2.Molmo2ImageInputs) -> tuple[torch.Tensor, ...]:
        """Embeddings of each image's tokens: token embedding, plus the pooled features at `<im_patch>`."""
        features = self.vision_backbone(
            images=image_input["pixel_values"].unsqueeze(0),
            token_pooling=image_input["token_pooling"].unsqueeze(0),
        )
        features_per_image = features.split(image_input["num_pooled_patches"].tolist(), dim=0)
        tokens_per_image = image_input["image_tokens"].split(image_input["num_image_tokens"].tolist(), dim=0)
        embed = self.get_language_model().embed_input_ids
        out = []
        for image_features, image_tokens in zip(features_per_image, tokens_per_image):
            embeddings = embed(image_tokens)
            embeddings[image_tokens == self.img_patch_id] += image_features.to(embeddings.dtype)
            out.append(embeddings)
        return tuple(out)
