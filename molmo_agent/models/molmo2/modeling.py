"""Molmo2 for transformers 5.9, with the module tree (and so the weight names) of the released checkpoint.

    Molmo2ForConditionalGeneration
      model.vision_backbone.image_vit       ViT without class token: patch_embedding (with bias), positional_embedding,
                                            transformer.resblocks.N (only up to the deepest layer read for features)
      model.vision_backbone.image_pooling_2d  attention pooling of 2x2 patch groups (query = mean of the group)
      model.vision_backbone.image_projector   SwiGLU (w1 gate, w3 up, w2 down) to the text width
      model.transformer                     wte (embedding + new_embedding), blocks.N, ln_f
      lm_head

One forward: ViT features of every crop (layers `adapter_config.vit_layers`, concatenated) -> pooled per
`<im_patch>` token -> ADDED to the `<im_patch>` embeddings -> decoder, where the tokens of image blocks attend to
each other bidirectionally and everything else is causal (the released model's and vLLM's mask).
"""
import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, find_packed_sequence_indices
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from molmo_agent.models.molmo2.configuration import (
    Molmo2AdapterConfig,
    Molmo2Config,
    Molmo2TextConfig,
    Molmo2VitConfig,
)
from molmo_agent.models.molmo2.weight_checks import check_loaded_weights


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. q [B, H, Lq, D], k/v [B, Hkv, Lk, D], mask additive or bool [B, 1, Lq, Lk].

    Returns the output as [B, Lq, H, D] (the attention interface's layout) and the weights [B, H, Lq, Lk].
    """
    groups = module.num_key_value_groups
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def attention_function(implementation: str) -> Callable:
    """transformers' attention interface (sdpa, flash_attention_2, ...) with our eager fallback."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)


class Molmo2RMSNorm(nn.Module):
    """RMSNorm computed in fp32, scaled in the input dtype."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------- ViT


class Molmo2ViTAttention(nn.Module):
    """Multi-head attention with biased projections; bidirectional (ViT) or pooling (query of length 1)."""

    def __init__(self, config: Molmo2VitConfig | Molmo2AdapterConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.is_causal = False
        self.wq = nn.Linear(input_dim, config.num_attention_heads * self.head_dim)
        self.wk = nn.Linear(input_dim, config.num_key_value_heads * self.head_dim)
        self.wv = nn.Linear(input_dim, config.num_key_value_heads * self.head_dim)
        self.wo = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size)

    def forward(
        self, inputs_q: torch.Tensor, inputs_kv: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """inputs_q [N, Lq, input_dim], inputs_kv [N, Lk, input_dim] (default: inputs_q), mask bool [N, 1, Lq, Lk]."""
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        n, q_len = inputs_q.shape[:2]
        q = self.wq(inputs_q).view(n, q_len, -1, self.head_dim).transpose(1, 2)
        k = self.wk(inputs_kv).view(n, inputs_kv.shape[1], -1, self.head_dim).transpose(1, 2)
        v = self.wv(inputs_kv).view(n, inputs_kv.shape[1], -1, self.head_dim).transpose(1, 2)
        dtype = q.dtype
        if self.config.float32_attention:  # the released model runs the softmax of its vision attentions in fp32
            q, k, v = q.float(), k.float(), v.float()
        # A pooling mask rules out flash-attention; the ViT itself (no mask) takes the configured implementation.
        implementation = "sdpa" if mask is not None else self.config._attn_implementation
        out, _ = attention_function(implementation)(
            self, q, k, v, mask, scaling=self.scaling, dropout=self.config.attention_dropout if self.training else 0.0
        )
        return self.wo(out.reshape(n, q_len, -1).to(dtype))


class Molmo2ViTMLP(nn.Module):
    def __init__(self, config: Molmo2VitConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


class Molmo2VisionBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm ViT block (an FSDP wrap unit)."""

    def __init__(self, config: Molmo2VitConfig):
        super().__init__()
        self.attention = Molmo2ViTAttention(config, config.hidden_size)
        self.feed_forward = Molmo2ViTMLP(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class Molmo2VisionBlockStack(nn.Module):
    def __init__(self, config: Molmo2VitConfig, num_layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList(Molmo2VisionBlock(config) for _ in range(num_layers))


class Molmo2VisionTransformer(nn.Module):
    """ViT over pre-patchified crops; returns every block's output."""

    def __init__(self, config: Molmo2VitConfig, num_layers: int):
        super().__init__()
        self.config = config
        self.positional_embedding = nn.Parameter(torch.zeros(config.image_num_pos, config.hidden_size))
        self.patch_embedding = nn.Linear(config.image_patch_size**2 * 3, config.hidden_size)
        self.transformer = Molmo2VisionBlockStack(config, num_layers)

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """patches [C, N, 3*p*p] -> per built layer [C, N, hidden]."""
        if patches.shape[1] != self.config.image_num_pos:
            raise ValueError(
                f"pixel_values has {patches.shape[1]} patches per crop; the ViT has {self.config.image_num_pos} "
                "position embeddings (the processor's crop size must match vit_config.image_default_input_size)"
            )
        x = self.patch_embedding(patches.to(self.patch_embedding.weight.dtype)) + self.positional_embedding
        hidden_states = []
        for block in self.transformer.resblocks:
            x = block(x)
            hidden_states.append(x)
        return hidden_states


class Molmo2ImageProjector(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: Molmo2AdapterConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.text_hidden_size, bias=False)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class Molmo2VisionBackbone(nn.Module):
    """Crops -> one text-width feature per pooled patch group (= per `<im_patch>` token)."""

    def __init__(self, config: Molmo2Config):
        super().__init__()
        self.vit_layers = config.vit_layers_used
        self.pooling_attention_mask = config.adapter_config.pooling_attention_mask
        # Layers past the deepest one read for features have no weights in the released checkpoint: not built.
        self.image_vit = Molmo2VisionTransformer(config.vit_config, max(self.vit_layers) + 1)
        pool_dim = config.vit_config.hidden_size * len(self.vit_layers)
        self.image_pooling_2d = Molmo2ViTAttention(config.adapter_config, pool_dim)
        self.image_projector = Molmo2ImageProjector(config.adapter_config)

    def forward(self, pixel_values: torch.Tensor, pooled_patches_idx: torch.Tensor) -> torch.Tensor:
        """pixel_values [C, N, 3*p*p]; pooled_patches_idx [P, k*k], indices into the C*N patches, -1 = none.

        Returns [P', text_hidden] for the P' rows with at least one valid index, in row order.
        """
        hidden_states = self.image_vit(pixel_values)
        features = torch.cat([hidden_states[layer] for layer in self.vit_layers], dim=-1)
        features = features.flatten(0, 1)  # [C*N, D*len(vit_layers)]

        # Rows without any patch carry no token; dropping them first also keeps an all-masked softmax out.
        pooled_patches_idx = pooled_patches_idx[(pooled_patches_idx >= 0).any(-1)]
        valid = pooled_patches_idx >= 0
        groups = features[pooled_patches_idx.clamp(min=0)] * valid[..., None].to(features.dtype)  # [P', k*k, Dk]
        if self.pooling_attention_mask:
            query = groups.sum(1, keepdim=True) / valid.sum(-1)[:, None, None].to(groups.dtype)
            mask = valid[:, None, None, :]
        else:
            query, mask = groups.mean(1, keepdim=True), None
        pooled = self.image_pooling_2d(query, groups, mask)  # [P', 1, adapter_hidden]
        return self.image_projector(pooled[:, 0])


# ------------------------------------------------------------------------------------------------------------ decoder


class Molmo2Embedding(nn.Module):
    """Token table as released: `embedding` for ids < vocab_size, `new_embedding` for the additional ids above."""

    def __init__(self, vocab_size: int, additional_vocab_size: int, hidden_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(vocab_size, hidden_size))
        self.new_embedding = nn.Parameter(torch.zeros(additional_vocab_size, hidden_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Two lookups rather than one in the concatenated table: concatenating would copy the whole base table
        # (~780 MB for Molmo2-4B in bf16) on every forward, and again in the backward.
        base_size = self.embedding.shape[0]
        is_new = input_ids >= base_size
        base = F.embedding(input_ids.clamp(max=base_size - 1), self.embedding)
        new = F.embedding((input_ids - base_size).clamp(min=0), self.new_embedding)
        return torch.where(is_new[..., None], new, base)


class Molmo2RotaryEmbedding(nn.Module):
    """Plain RoPE (rotate-half layout): cos/sin [B, L, head_dim] for the given positions."""

    def __init__(self, config: Molmo2TextConfig):
        super().__init__()
        self.register_buffer("inv_freq", rope_inverse_frequencies(config), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def rope_inverse_frequencies(config: Molmo2TextConfig) -> torch.Tensor:
    """[head_dim / 2] float32: theta^(-2i / head_dim)."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float) / config.head_dim
    return 1.0 / config.rope_theta**exponents


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class Molmo2Attention(nn.Module):
    """GQA self-attention: fused q/k/v projection, per-head RMSNorm of q and k, RoPE, KV cache."""

    def __init__(self, config: Molmo2TextConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.q_size = config.num_attention_heads * self.head_dim
        self.kv_size = config.num_key_value_heads * self.head_dim
        self.scaling = self.head_dim**-0.5
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.is_causal = True
        self.att_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.attn_out = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.q_norm = Molmo2RMSNorm(self.head_dim, config.layer_norm_eps)
        self.k_norm = Molmo2RMSNorm(self.head_dim, config.layer_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        attn_implementation: str,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        batch, length = x.shape[:2]
        q, k, v = self.att_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_norm(q.view(batch, length, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(batch, length, -1, self.head_dim)).transpose(1, 2)
        v = v.view(batch, length, -1, self.head_dim).transpose(1, 2)
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        out, _ = attention_function(attn_implementation)(
            self,
            q,
            k,
            v,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            **kwargs,
        )
        return self.attn_out(out.reshape(batch, length, -1))


class Molmo2MLP(nn.Module):
    """SwiGLU with a fused projection whose first half is `up` and second half `gate` (the released layout)."""

    def __init__(self, config: Molmo2TextConfig):
        super().__init__()
        self.ff_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = ACT2FN[config.hidden_act]
        self.ff_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.ff_proj(x).chunk(2, dim=-1)
        return self.ff_out(self.act(gate) * up)


class Molmo2DecoderBlock(GradientCheckpointingLayer):
    """Pre-norm decoder block (an FSDP wrap unit)."""

    def __init__(self, config: Molmo2TextConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Molmo2Attention(config, layer_idx)
        self.attn_norm = Molmo2RMSNorm(config.hidden_size, config.layer_norm_eps)
        self.mlp = Molmo2MLP(config)
        self.ff_norm = Molmo2RMSNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, **attention_kwargs) -> torch.Tensor:
        x = x + self.self_attn(self.attn_norm(x), **attention_kwargs)
        return x + self.mlp(self.ff_norm(x))


class Molmo2TextModel(nn.Module):
    """Decoder over input embeddings."""

    def __init__(self, config: Molmo2TextConfig):
        super().__init__()
        self.config = config
        self.wte = Molmo2Embedding(config.vocab_size, config.additional_vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Molmo2DecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = Molmo2RMSNorm(config.hidden_size, config.layer_norm_eps)
        self.rotary_emb = Molmo2RotaryEmbedding(config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        image_blocks: torch.Tensor | None,
        past_key_values: Cache | None,
        **kwargs,
    ) -> torch.Tensor:
        """inputs_embeds [B, L, D]; image_blocks [B, L] int (block id per image token, -1 elsewhere) or None."""
        implementation = self.config._attn_implementation
        mask_config = self.config
        if image_blocks is not None and implementation not in ("sdpa", "eager", "flex_attention"):
            # Flash kernels cannot express the bidirectional image block (a flex-attention mask can): such
            # forwards run on SDPA.
            implementation = "sdpa"
            mask_config = copy.copy(self.config)
            mask_config._attn_implementation_internal = "sdpa"
        mask = create_causal_mask(
            config=mask_config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
            block_sequence_ids=image_blocks,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        x = inputs_embeds
        for block in self.blocks:
            x = block(
                x,
                position_embeddings=position_embeddings,
                attention_mask=mask,
                attn_implementation=implementation,
                past_key_values=past_key_values,
                position_ids=position_ids,
                **kwargs,
            )
        return self.ln_f(x)


# -------------------------------------------------------------------------------------------------------------- model


def in_multi_rank_group() -> bool:
    """Whether this process is one of several ranks of torch.distributed (FSDP or DDP), in training or not: FSDP
    gathers weights in every forward, also under `no_grad` (verl's log-prob passes). Single-process inference
    (transformers' `generate`) never is."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Molmo2PreTrainedModel(PreTrainedModel):
    config_class = Molmo2Config
    config: Molmo2Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # FSDP wrap units (verl reads this list for its transformer auto-wrap policy).
    _no_split_modules = ["Molmo2DecoderBlock", "Molmo2VisionBlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: Molmo2Config):
        # The config validated itself when built, but verl sets fields (override_config) after loading it.
        config.validate()
        super().__init__(config)
        # PreTrainedModel sets the attention implementation on the top-level config only; re-assigning it through
        # the config's setter hands it to the sub-configs, which our blocks read.
        config._attn_implementation = config._attn_implementation

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Molmo2Embedding):
            init.normal_(module.embedding, mean=0.0, std=std)
            init.normal_(module.new_embedding, mean=0.0, std=std)
        elif isinstance(module, Molmo2VisionTransformer):
            init.normal_(module.positional_embedding, mean=0.0, std=std)
        elif isinstance(module, Molmo2RotaryEmbedding):
            init.copy_(module.inv_freq, rope_inverse_frequencies(self.config.text_config))


class Molmo2Model(Molmo2PreTrainedModel):
    """Vision backbone + decoder; `forward` returns the final hidden states."""

    def __init__(self, config: Molmo2Config):
        super().__init__(config)
        self.transformer = Molmo2TextModel(config.text_config)
        self.vision_backbone = Molmo2VisionBackbone(config)
        self.image_token_ids = config.image_token_ids
        self.post_init()

    def get_input_embeddings(self) -> Molmo2Embedding:
        return self.transformer.wte

    def image_features(
        self,
        pixel_values: torch.Tensor,
        image_token_pooling: torch.Tensor,
        image_grids: torch.Tensor,
        image_num_crops: torch.Tensor,
    ) -> torch.Tensor:
        """Pooled features [P, D_text] of all images, in the order of their `<im_patch>` tokens.

        `image_token_pooling` indexes each image's own crops; here each image's offset (the patches of the crops
        before it) is added, so per-sample tensors concatenated along dim 0 (as verl batches them) stay valid.
        """
        num_images, num_patches = len(image_num_crops), pixel_values.shape[1]
        rows_per_image = image_grids[:, 0] * image_grids[:, 1] + image_grids[:, 2] * image_grids[:, 3]
        if len(image_grids) != num_images or int(image_num_crops.sum()) != len(pixel_values):
            raise ValueError(
                f"image inputs disagree: {len(image_grids)} image_grids, {num_images} image_num_crops summing to "
                f"{int(image_num_crops.sum())} crops, pixel_values has {len(pixel_values)} crops"
            )
        if int(rows_per_image.sum()) != len(image_token_pooling):
            raise ValueError(
                f"image_token_pooling has {len(image_token_pooling)} rows; image_grids describe "
                f"{int(rows_per_image.sum())}"
            )
        patch_offsets = torch.cumsum(image_num_crops * num_patches, 0) - image_num_crops * num_patches
        row_offsets = torch.repeat_interleave(patch_offsets.to(image_token_pooling.device), rows_per_image)
        pooled_idx = torch.where(image_token_pooling >= 0, image_token_pooling + row_offsets[:, None], -1)
        return self.vision_backbone(pixel_values, pooled_idx)

    def blank_image_features(self, device: torch.device) -> torch.Tensor:
        """Features [1, D_text] of one all-zero crop pooled into one token: the cheapest run of every vision weight.

        For a forward without images inside a process group: FSDP gathers (and in the backward reduces) each vision
        block's weights only on the ranks that run it, so a rank without images would pair its next collective with
        another rank's vision collective (verl pads batches with text-only samples, so such ranks occur).
        """
        vit_config = self.config.vit_config
        crop = torch.zeros(1, vit_config.image_num_pos, vit_config.image_patch_size**2 * 3, device=device)
        return self.vision_backbone(crop, torch.zeros(1, 1, dtype=torch.long, device=device))

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings [B, L, D] with the image features added at the `<im_patch>` positions (row-major)."""
        embeds = self.transformer.wte(input_ids)
        is_patch = input_ids == self.config.image_patch_id
        num_patches, num_features = int(is_patch.sum()), 0 if image_features is None else len(image_features)
        if num_patches != num_features:
            raise ValueError(
                f"the prompt has {num_patches} <im_patch> positions but the images give {num_features} features: "
                "the number of images does not match the image placeholders in the text"
            )
        if image_features is None:
            return embeds
        return embeds.index_put((is_patch,), image_features.to(embeds.dtype), accumulate=True)

    def image_blocks(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
        past_key_values: Cache | None,
    ) -> torch.Tensor | None:
        """Block id per token for the mask: image tokens of one sequence share a block, others get -1.

        Only at prefill (an empty cache). Packed sequences (no attention mask, positions restarting, as verl's
        remove-padding path sends them) get one block per sequence, so images never see another sample.
        """
        is_image = torch.isin(input_ids, torch.tensor(self.image_token_ids, device=input_ids.device))
        if not bool(is_image.any()) or (past_key_values is not None and past_key_values.get_seq_length() > 0):
            return None
        sequence_ids = None
        if attention_mask is None:
            sequence_ids = find_packed_sequence_indices(position_ids.expand(input_ids.shape[0], -1))
        if sequence_ids is None:
            sequence_ids = torch.zeros_like(input_ids)
        return torch.where(is_image, sequence_ids, -1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        image_num_crops: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None and not self.training:
            past_key_values = DynamicCache(config=self.config.text_config)
        if not use_cache:
            past_key_values = None
        if position_ids is None:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]

        image_features = None
        if pixel_values is not None:
            if image_token_pooling is None or image_grids is None or image_num_crops is None:
                raise ValueError("pixel_values needs image_token_pooling, image_grids and image_num_crops too")
            image_features = self.image_features(pixel_values, image_token_pooling, image_grids, image_num_crops)
        embeds = self.embed(input_ids, image_features)
        if pixel_values is None and in_multi_rank_group():
            # Adding exact zeros keeps the logits; the graph (and so the backward) still reaches every vision weight.
            embeds = embeds + self.blank_image_features(input_ids.device).sum() * 0
        hidden = self.transformer(
            embeds,
            attention_mask,
            position_ids,
            self.image_blocks(input_ids, attention_mask, position_ids, past_key_values),
            past_key_values,
            **kwargs,
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=past_key_values)


class Molmo2ForConditionalGeneration(Molmo2PreTrainedModel, GenerationMixin):
    """Molmo2 with its LM head (over the base vocabulary only, as released)."""

    def __init__(self, config: Molmo2Config):
        super().__init__(config)
        self.model = Molmo2Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: object, *model_args, **kwargs):
        """transformers' loading, then the checkpoint is refused, its directory and tensors named, if a tensor is
        missing, unexpected, of another shape or not finite (transformers would only log it; see weight_checks.py).
        `from_config` and direct construction load nothing and check nothing."""
        return_info = kwargs.pop("output_loading_info", False)
        allow_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        # Mismatched shapes are collected (not raised by transformers) so that the error can name them.
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        check_loaded_weights(model, info, pretrained_model_name_or_path, allow_mismatched)
        return (model, info) if return_info else model

    def get_input_embeddings(self) -> Molmo2Embedding:
        return self.model.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def resize_token_embeddings(self, new_num_tokens: int | None = None, *args, **kwargs) -> Molmo2Embedding:
        """Make ids up to `new_num_tokens - 1` embeddable; existing rows stay, new rows start at the mean row.

        Ids >= vocab_size live in `new_embedding` (where the image tokens already are), so growing means appending
        rows to it and raising `text_config.additional_vocab_size`. The LM head keeps the base vocabulary: added
        tokens can be read, not generated — as the released image tokens.
        """
        wte = self.get_input_embeddings()
        text_config = self.config.text_config
        extra = (new_num_tokens or 0) - text_config.vocab_size - text_config.additional_vocab_size
        if extra <= 0:
            return wte
        with torch.no_grad():
            mean = torch.cat([wte.embedding, wte.new_embedding]).mean(0, keepdim=True)
            grown = torch.cat([wte.new_embedding, mean.expand(extra, -1)])
        wte.new_embedding = nn.Parameter(grown, requires_grad=wte.new_embedding.requires_grad)
        text_config.additional_vocab_size += extra
        return wte

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        image_num_crops: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        logits_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """input_ids [B, L]; image inputs as the processor returns them (see `Molmo2Model.image_features`).

        Returns logits [B, L, vocab_size] (or the last `logits_to_keep` positions) and, given labels, the
        next-token cross-entropy. `logits_positions`, a bool [B, L] mask, computes the LM head at those positions
        only: logits [N, vocab_size], N = its count, in row-major order (a trainer that scores only responses
        skips the head's cost on every prompt token).
        """
        if logits_positions is not None and labels is not None:
            raise ValueError("logits_positions and labels exclude each other: the loss needs every position's logits")
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            pixel_values=pixel_values,
            image_token_pooling=image_token_pooling,
            image_grids=image_grids,
            image_num_crops=image_num_crops,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if logits_positions is not None:
            logits = self.lm_head(hidden[logits_positions])  # [B, L, d] -> [N, d] -> [N, vocab]
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config.text_config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        image_num_crops: torch.Tensor | None = None,
        is_first_iteration: bool = False,
        **kwargs,
    ) -> dict:
        """Image inputs go to the first step only; later steps read them from the KV cache."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs.update(
                pixel_values=pixel_values,
                image_token_pooling=image_token_pooling,
                image_grids=image_grids,
                image_num_crops=image_num_crops,
            )
        return model_inputs
