"""bench/vllm_molmo2.py's bytes-read bound of a decode step: decoder and LM head weights plus the KV cache."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import vllm_molmo2  # noqa: E402

TEXT_CONFIG = {"num_hidden_layers": 3, "num_key_value_heads": 2, "head_dim": 8, "hidden_size": 48,
               "num_attention_heads": 6}


def test_a_decode_step_reads_the_decoder_the_head_and_the_kv_cache():
    parameters = {"model.transformer.blocks.0.mlp.ff_proj.weight": 1000, "model.transformer.ln_f.weight": 10,
                  "lm_head.weight": 500, "model.transformer.wte.embedding": 70_000,
                  "model.transformer.wte.new_embedding": 30, "model.vision_backbone.image_vit.patch_embedding.weight": 9}
    bound = vllm_molmo2.decode_bytes_per_step(parameters, TEXT_CONFIG, batch=4, context=100.5)
    assert bound["weights"] == 1000 + 10 + 500  # not the input tables, not the vision tower
    # 3 layers x (keys + values) x 2 heads x 8 dims x 2 bytes, for 4 sequences of 100.5 tokens
    assert bound["kv_cache"] == 3 * 2 * 2 * 8 * 2 * 4 * 100.5
    assert bound["total"] == bound["weights"] + bound["kv_cache"]


def test_head_dim_defaults_to_hidden_over_heads():
    config = {key: value for key, value in TEXT_CONFIG.items() if key != "head_dim"}
    assert vllm_molmo2.decode_bytes_per_step({}, config, batch=1, context=1)["kv_cache"] == 3 * 2 * 2 * 8 * 2
