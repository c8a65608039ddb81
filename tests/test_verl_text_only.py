"""vLLM serves the model text-only for environments without pictures (integrations/verl/text_only.py)."""
import json

import pytest
from test_config import compose_config

from molmo_agent.integrations.verl.text_only import TEXT_ONLY_ENGINE_KWARGS, serve_text_only

TEXT_ONLY_KEYS = ["limit_mm_per_prompt", "hf_overrides"]


def engine_kwargs(config) -> dict:
    return dict(config.actor_rollout_ref.rollout.engine_kwargs.vllm)


def test_alfworld_is_served_text_only_with_causal_attention(model_dir, data_dir):
    config = compose_config(model_dir, data_dir)
    assert serve_text_only(config) == TEXT_ONLY_KEYS
    served = engine_kwargs(config)
    # JSON strings: verl passes a string to vLLM's command line as it is, and vLLM json-loads these options
    assert json.loads(served["limit_mm_per_prompt"]) == {"image": 0, "video": 0}
    assert json.loads(served["hf_overrides"]) == {"is_mm_prefix_lm": False}
    assert {key: json.loads(served[key]) for key in TEXT_ONLY_KEYS} == TEXT_ONLY_ENGINE_KWARGS


@pytest.mark.parametrize("overrides", [
    ["env.env_name=sokoban"],  # its observations are pictures
    ["env.serve_text_only=False"],
    ["+actor_rollout_ref.rollout.limit_images=2"],  # verl sets vLLM's image limit from it
    ["actor_rollout_ref.rollout.quantization=fp8"],  # verl sets hf_overrides for it
], ids=["pictures", "switched-off", "limit-images", "quantized"])
def test_rollouts_that_may_see_pictures_are_served_as_released(model_dir, data_dir, overrides):
    config = compose_config(model_dir, data_dir, *overrides)
    assert serve_text_only(config) == []
    assert not set(TEXT_ONLY_KEYS) & set(engine_kwargs(config))


def test_an_engine_argument_the_user_set_wins(model_dir, data_dir):
    mine = '{"is_mm_prefix_lm": true}'
    config = compose_config(model_dir, data_dir,
                            f"++actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides='{mine}'")
    assert serve_text_only(config) == ["limit_mm_per_prompt"]
    assert engine_kwargs(config)["hf_overrides"] == mine
