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


def fake_child(tmp_path, body: str) -> str:
    """A stand-in for the bench's own script in its child role (`--child MODE`): `body` runs with `mode` set."""
    script = tmp_path / "child.py"
    script.write_text("import json, os, sys\nmode = sys.argv[sys.argv.index('--child') + 1]\n" + body)
    return str(script)


def test_each_mode_runs_in_its_own_process_with_verls_compile_cache_off(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_startup, "__file__", fake_child(tmp_path, (
        "print('vLLM chatter')\n"
        "print('vllm_startup result: ' + json.dumps({'mode': mode, 'pid': os.getpid(),\n"
        "      'cache_off': os.environ['VLLM_DISABLE_COMPILE_CACHE'], 'argv': sys.argv[1:]}))\n")))
    first, second = (vllm_startup.run_mode(mode, ["--size", "tiny"]) for mode in vllm_startup.MODES)
    assert first["mode"] == "compile" and second["mode"] == "no-compile" and first["pid"] != second["pid"]
    assert first["cache_off"] == "1"
    assert first["argv"] == ["--size", "tiny", "--child", "compile"]


def test_a_mode_whose_engine_fails_is_named(tmp_path, monkeypatch):
    child = fake_child(tmp_path, "sys.exit('Engine core initialization failed')\n")
    monkeypatch.setattr(vllm_startup, "__file__", child)
    with pytest.raises(SystemExit, match="mode no-compile failed"):
        vllm_startup.run_mode("no-compile", [])
