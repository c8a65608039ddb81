"""vLLM serves the model text-only where the environment shows no pictures.

Molmo2 is a multimodal prefix-LM: the tokens of an image block attend to each other both ways. vLLM 0.24 treats
every `molmo2` model so, and only two of its attention backends take that mask, Triton and Flex (FlashAttention
needs its version 4, FlashInfer never), text-only steps included. Without pictures the mask is plain causal, so
for an environment whose `EnvSpec.images` is False the rollout's engine arguments say so: `hf_overrides` sets the
config's `is_mm_prefix_lm` to False (vLLM reads that before its list of prefix-LM models), and
`limit_mm_per_prompt` allows no image or video, so vLLM skips its multimodal start-up work. A value the user set
for either key wins; `env.serve_text_only=False` leaves both to vLLM.
"""
import json
from typing import Any

from omegaconf import DictConfig, open_dict

from molmo_agent.envs.registry import get_env

TEXT_ONLY_ENGINE_KWARGS: dict[str, dict[str, Any]] = {
    "limit_mm_per_prompt": {"image": 0, "video": 0},
    "hf_overrides": {"is_mm_prefix_lm": False},
}


def verl_sets_engine_options(rollout: DictConfig) -> bool:
    """Whether verl's vLLM server fills in an image limit (`limit_images`) or `hf_overrides` (quantization, QAT)
    itself: an engine option given in `engine_kwargs` would replace its value."""
    return bool(rollout.get("limit_images") or rollout.get("quantization") or rollout.get("quantization_config_file")
                or (rollout.get("qat") or {}).get("enable"))


def serve_text_only(config: DictConfig) -> list[str]:
    """Add TEXT_ONLY_ENGINE_KWARGS to `actor_rollout_ref.rollout.engine_kwargs.vllm` where `env.env_name` shows no
    pictures, `env.serve_text_only` is on and the rollout is vLLM's with none of those options verl's; each value
    as a JSON string, which verl hands to vLLM's command line as it is. Returns the keys it set."""
    rollout = config.actor_rollout_ref.rollout
    if (not config.env.get("serve_text_only", True) or rollout.name != "vllm" or verl_sets_engine_options(rollout)
            or get_env(config.env.env_name).images):
        return []
    with open_dict(rollout):
        engine = rollout.engine_kwargs.vllm
        added = [key for key in TEXT_ONLY_ENGINE_KWARGS if engine.get(key) is None]
        for key in added:
            engine[key] = json.dumps(TEXT_ONLY_ENGINE_KWARGS[key])
    return added
