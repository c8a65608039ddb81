"""verl loads molmo_agent through its `verl.plugins` entry point: `import verl` alone registers our estimator."""
import os
import subprocess
import sys

CHECK = """
import verl
from verl.trainer.ppo import core_algos
assert "gigpo" in core_algos.ADV_ESTIMATOR_REGISTRY, sorted(core_algos.ADV_ESTIMATOR_REGISTRY)
import logging
logging.getLogger("molmo_agent.integrations.verl.engine").info("a note a worker writes once")
"""


def test_import_verl_registers_gigpo_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}  # verl's default: load all
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # as in a Ray worker, verl's import left the root logger at WARNING: our INFO notes still reach stderr
    assert "a note a worker writes once" in done.stderr, done.stderr[-3000:]


ENTERING_OUR_PACKAGE_FIRST = """
from molmo_agent.integrations.verl import steps  # verl is first imported from inside our package
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from verl.trainer.ppo import core_algos
from verl.utils.tokenizer import hf_processor
assert "gigpo" in core_algos.ADV_ESTIMATOR_REGISTRY and "molmo2" in CONFIG_MAPPING
assert hf_processor.__module__ == "molmo_agent.integrations.verl.processor", hf_processor.__module__
"""


def test_registration_holds_when_our_verl_package_is_imported_before_verl():
    # verl hides a plugin's import error; a registration that half-imported our package used to fail unseen.
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}
    done = subprocess.run([sys.executable, "-c", ENTERING_OUR_PACKAGE_FIRST], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


VLLM_ENTRY_POINT = """
import sys
from importlib.metadata import entry_points
(ep,) = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "molmo_agent"]
register = ep.load()
assert callable(register), register
heavy = sorted(name for name in ("verl", "vllm") if name in sys.modules)
assert not heavy, f"loading vLLM's entry point imported {heavy}"
"""


def test_vllm_entry_point_loads_without_importing_verl_or_vllm():
    # vLLM loads it in every engine and worker process: verl must not come along (start-up cost, and vLLM
    # users without verl); vllm itself is imported only when register() runs.
    done = subprocess.run([sys.executable, "-c", VLLM_ENTRY_POINT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
