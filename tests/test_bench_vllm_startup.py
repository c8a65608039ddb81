"""bench/vllm_startup.py hands vLLM the compilation configs verl's rollout server would: its default, and the one
run_alfworld.sh sends for ROLLOUT_COMPILE=0 (read from the script)."""
import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import vllm_startup  # noqa: E402


def test_modes_send_verls_default_and_the_launchers_no_compile_config():
    assert vllm_startup.compilation_config("compile") == {"cudagraph_mode": "FULL_AND_PIECEWISE"}
    assert vllm_startup.compilation_config("no-compile") == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}


def test_verls_server_still_defaults_to_the_cudagraph_mode_the_bench_assumes():
    # the module's text: importing its package needs vLLM, which the CPU machines lack
    verl = pathlib.Path(importlib.util.find_spec("verl").origin).parent
    source = verl / "workers" / "rollout" / "vllm_rollout" / "vllm_async_server.py"
    assert f'setdefault("cudagraph_mode", "{vllm_startup.VERL_DEFAULT_CUDAGRAPH_MODE}")' in source.read_text()


def test_a_launcher_without_the_no_compile_line_is_named(tmp_path):
    script = tmp_path / "run_alfworld.sh"
    script.write_text("#!/usr/bin/env bash\nexec python -m molmo_agent.main\n")
    with pytest.raises(SystemExit, match=f"{script}: no `no_compile="):
        vllm_startup.launcher_no_compile_config(script)
