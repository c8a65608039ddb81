"""bench/vllm_molmo2.py's bytes-read bound of a decode step (decoder and LM head weights plus the KV cache), and its
profiled split of decode steps into GPU-busy time, gaps and kernel classes, reduced again from a fetched trace."""
import gzip
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import vllm_molmo2  # noqa: E402

TEXT_CONFIG = {"num_hidden_layers": 3, "num_key_value_heads": 2, "head_dim": 8, "hidden_size": 48,
               "num_attention_heads": 6}


def test_a_decode_step_reads_the_decoder_the_head_and_the_kv_cache():
    parameters = {"model.transformer.blocks.0.mlp.ff_proj.weight": 1000, "model.transformer.ln_f.weight": 10,
                  "lm_head.weight": 500, "model.transformer.wte.embedding": 70_000,
                  "model.transformer.wte.new_embedding": 30,
                  "model.vision_backbone.image_vit.patch_embedding.weight": 9}
    bound = vllm_molmo2.decode_bytes_per_step(parameters, TEXT_CONFIG, batch=4, context=100.5)
    assert bound["weights"] == 1000 + 10 + 500  # not the input tables, not the vision tower
    # 3 layers x (keys + values) x 2 heads x 8 dims x 2 bytes, for 4 sequences of 100.5 tokens
    assert bound["kv_cache"] == 3 * 2 * 2 * 8 * 2 * 4 * 100.5
    assert bound["total"] == bound["weights"] + bound["kv_cache"]


def test_head_dim_defaults_to_hidden_over_heads():
    config = {key: value for key, value in TEXT_CONFIG.items() if key != "head_dim"}
    assert vllm_molmo2.decode_bytes_per_step({}, config, batch=1, context=1)["kv_cache"] == 3 * 2 * 2 * 8 * 2


def event(category, name, start_ms, length_ms, pid=1):
    return {"ph": "X", "cat": category, "name": name, "ts": 1e3 * start_ms, "dur": 1e3 * length_ms, "pid": pid,
            "tid": 1}


# A 12 ms profiled stretch: one step still prefilling, then three decode-only steps; the GPU busy 6 ms in all
# (two overlapping kernels count once), so 6 ms are gaps: 2 ms a decode step.
WORKER_EVENTS = [event("Trace", "PyTorch Profiler (0)", 0, 12, "Spans"),
                 event("user_annotation", "execute_context_2(300)_generation_62(62)", 0, 3),
                 *[event("user_annotation", "execute_context_0(0)_generation_64(64)", start, 3) for start in (3, 6, 9)],
                 event("gpu_user_annotation", "execute_context_0(0)_generation_64(64)", 3, 3, pid=0),
                 event("kernel", "gemm", 1, 3, pid=0), event("kernel", "attention", 2, 1, pid=0),
                 event("kernel", "gemm", 5, 1.5, pid=0), event("kernel", "gemm", 8, 1.5, pid=0)]


def worker_trace(directory: pathlib.Path, events: list[dict]) -> pathlib.Path:
    trace = directory / "dp0_pp0_tp0.123.pt.trace.json.gz"
    trace.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    return trace


def test_decode_split_counts_decode_only_steps_and_splits_their_wall_into_busy_and_gaps(tmp_path):
    trace = worker_trace(tmp_path, WORKER_EVENTS)
    split = vllm_molmo2.decode_split(trace)
    assert split["steps"] == 3  # the prefilling step and the GPU-side annotation are not decode steps
    assert split["wall_ms_per_step"] == pytest.approx(4.0)
    assert split["gpu_busy_ms_per_step"] == pytest.approx(2.0)
    assert split["gap_ms_per_step"] == pytest.approx(2.0)
    assert split["gpu_busy_fraction"] == pytest.approx(0.5)
    assert split["top_kernels"][0]["name"] == "gemm"
    assert split["kernel_ms_per_step"] == pytest.approx({"attention": 1 / 3, "gemm": 2.0, "other": 0.0})
    with pytest.raises(ValueError, match="no decode-only step"):
        vllm_molmo2.decode_split(worker_trace(tmp_path, WORKER_EVENTS[:2]))


def test_the_profiler_skips_the_prefill_and_records_fewer_steps_than_the_call_makes(tmp_path):
    config = vllm_molmo2.profiler_config(tmp_path)
    assert config["profiler"] == "torch" and config["torch_profiler_dir"] == str(tmp_path)
    assert config["delay_iterations"] >= 2 and config["max_iterations"] == vllm_molmo2.PROFILE_STEPS


def test_kernel_classes_name_flash_attention_as_attention_and_cublas_splits_as_gemm():
    assert vllm_molmo2.kernel_class("void cutlass::device_kernel<flash::FlashAttnFwdSm90<...>>") == "attention"
    assert vllm_molmo2.kernel_class("kernel_unified_attention_2d") == "attention"
    assert vllm_molmo2.kernel_class("nvjet_sm90_tst_192x64_64x6_4x1_v_bz_TNT") == "gemm"
    assert vllm_molmo2.kernel_class("void cublasLt::splitKreduce_kernel<32, 16>") == "gemm"
    assert vllm_molmo2.kernel_class("triton_red_fused_fused_add_rms_norm_0") == "other"


def test_each_kernel_class_is_held_against_the_bytes_it_must_read():
    """1 GB of weights and 0.5 GB of KV cache at 1 TB/s: 1 ms and 0.5 ms; GEMMs of 2 ms and attention of 2 ms."""
    profile = {"kernel_ms_per_step": {"gemm": 2.0, "attention": 2.0, "other": 1.0}}
    bound = {"weights": 1e9, "kv_cache": 5e8, "total": 1.5e9}
    shares = vllm_molmo2.profile_bound(profile, bound, rate=1e12)
    assert shares["fraction_of_bound"] == pytest.approx({"gemm": 0.5, "attention": 0.25})
    assert shares["bound_bytes_per_step"] == bound and shares["kernel_ms_per_step"] == profile["kernel_ms_per_step"]
    assert vllm_molmo2.profiled_context(256) == 256 + vllm_molmo2.PROFILE_SKIP_STEPS + vllm_molmo2.PROFILE_STEPS / 2


def test_a_fetched_trace_is_reduced_again_into_its_result_with_the_4b_shapes_bytes(tmp_path):
    result = tmp_path / "vllm_molmo2_h200.json"
    result.write_text(json.dumps({"params": {"prompt_len": 256}, "copy_rate_bytes_per_s": 4e12,
                                  "decode_text_only": {"ms_per_step": 4.7}}))
    vllm_molmo2.reduce_into(result, worker_trace(tmp_path, WORKER_EVENTS))
    entry = json.loads(result.read_text())["decode_text_only"]
    assert entry["ms_per_step"] == 4.7 and entry["profile"]["steps"] == 3
    # the decoder's and LM head's bf16 bytes, as the GPU run counted them from the drawn checkpoint
    assert entry["profile"]["bound_bytes_per_step"]["weights"] == 8_044_936_192
    assert entry["profile"]["fraction_of_bound"]["gemm"] == pytest.approx(8_044_936_192 / 4e12 * 1e3 / 2.0)
