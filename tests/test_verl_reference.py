"""The reference model stays on the GPU: verl chooses our FSDP engine on NVIDIA GPUs, whose forward-only models
follow their offload knobs in verl's own `_build_fsdp_module` and `to` (FSDP stubbed: no GPU here), and our
config loads the reference in bf16."""
import pathlib
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.distributed.fsdp import CPUOffload, CPUOffloadPolicy

import verl  # noqa: F401  (loads our plugin)
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.torch_dtypes import PrecisionType
from verl.workers.config import FSDPEngineConfig
from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp import transformer_impl

from molmo_agent.integrations.verl import engine as engine_module
from molmo_agent.integrations.verl import reference
from molmo_agent.integrations.verl.reference import FSDPEngineWithGpuReference

ROOT = pathlib.Path(__file__).parents[1]


def engine(**engine_config) -> FSDPEngineWithGpuReference:
    """Our engine with the state `_build_fsdp_module` and `to` read, without __init__'s process group."""
    built = object.__new__(FSDPEngineWithGpuReference)
    built.engine_config = FSDPEngineConfig(**engine_config)
    built.model_config = SimpleNamespace(lora_rank=0, enable_activation_offload=False)
    built.device_mesh = None
    built._is_offload_param = built.engine_config.param_offload
    built._is_offload_optimizer = built.engine_config.optimizer_offload
    built.optimizer = None
    return built


@pytest.fixture
def fsdp_wrappers(monkeypatch) -> dict:
    """Stub the FSDP wrappers verl's `_build_fsdp_module` calls; returns the offload each one was given."""
    seen = {}

    class FSDP1:
        def __init__(self, module, cpu_offload, **_):
            seen["fsdp"] = cpu_offload

        @staticmethod
        def set_state_dict_type(*_, **__):
            pass

    def load_fsdp2(module, state, mesh, offload_policy):
        seen["fsdp2"] = offload_policy

    for name, stub in {"FSDP": FSDP1, "get_fsdp_wrap_policy": lambda **_: None, "get_device_id": lambda: 0,
                       "get_sharding_strategy": lambda *_, **__: None, "apply_fsdp2": lambda *_: None,
                       "fsdp2_load_full_state_dict": load_fsdp2}.items():
        monkeypatch.setattr(transformer_impl, name, stub)
    monkeypatch.setattr(transformer_impl, "fsdp_version", lambda module: 1 if isinstance(module, FSDP1) else 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *_: 1)
    return seen


@pytest.mark.parametrize("backend", ["fsdp", "fsdp2"])
def test_verl_chooses_our_engine_on_nvidia_gpus(backend, monkeypatch):
    monkeypatch.setenv("VERL_ENGINE_DEVICE", "cuda")
    monkeypatch.setenv("VERL_ENGINE_VENDOR", "nvidia")
    chosen = EngineRegistry.get_engine_cls("language_model", backend)
    assert chosen is engine_module.MolmoAgentFSDPEngine and issubclass(chosen, FSDPEngineWithGpuReference)
    engine_module.register_engine()  # a second registration is a no-op, not verl's duplicate-key assertion


@pytest.mark.parametrize("strategy, forced", [("fsdp", CPUOffload), ("fsdp2", CPUOffloadPolicy)])
@pytest.mark.parametrize("switch, forward_only, offloaded", [
    ("1", True, False),   # the reference model, on the GPU
    ("0", True, True),    # verl's forced offload, restored
    ("1", False, False),  # a trained model: unchanged
])
def test_reference_offload_follows_the_switch(strategy, forced, switch, forward_only, offloaded, fsdp_wrappers,
                                              monkeypatch):
    monkeypatch.setenv(reference.SWITCH, switch)
    built = engine(strategy=strategy, forward_only=forward_only)
    built._build_fsdp_module(torch.nn.Linear(2, 2))
    assert isinstance(fsdp_wrappers[strategy], forced) if offloaded else fsdp_wrappers[strategy] is None
    assert built.engine_config.forward_only is forward_only, "the engine config's flag was not restored"


@pytest.mark.parametrize("switch, moves", [("1", ["gpu", "cpu"]), ("0", [])])
def test_an_offloaded_reference_moves_between_calls_only_with_the_switch(switch, moves, monkeypatch):
    # param_offload=True (OFFLOAD=True): loaded for each call and offloaded after, as verl does for the actor
    monkeypatch.setenv(reference.SWITCH, switch)
    moved = []
    monkeypatch.setattr(transformer_impl, "get_device_name", lambda: "cuda")
    monkeypatch.setattr(transformer_impl, "load_fsdp_model_to_gpu", lambda module: moved.append("gpu"))
    monkeypatch.setattr(transformer_impl, "offload_fsdp_model_to_cpu", lambda module: moved.append("cpu"))
    built = engine(strategy="fsdp", forward_only=True, param_offload=True)
    built.module = torch.nn.Linear(2, 2)
    built.to("cuda", model=True, optimizer=False, grad=False)
    built.to("cpu", model=True, optimizer=False, grad=False)
    assert moved == moves
    assert built.engine_config.forward_only


def test_our_config_builds_a_bf16_reference_that_stays_on_the_gpu(monkeypatch):
    monkeypatch.delenv(reference.SWITCH, raising=False)
    with initialize_config_dir(config_dir=str(ROOT / "molmo_agent" / "config"), version_base=None):
        config = compose("alfworld_gigpo", overrides=["actor_rollout_ref.model.path=/model"])
    assert config.ray_kwargs.ray_init.runtime_env.env_vars[reference.SWITCH] == "1"
    engine_config = omega_conf_to_dataclass(config.actor_rollout_ref.ref.fsdp_config)
    assert PrecisionType.to_dtype(engine_config.model_dtype) == torch.bfloat16
    built = engine(**{key: engine_config[key] for key in ("strategy", "forward_only", "param_offload")})
    assert built.engine_config.forward_only and built._follows_offload_config()
    assert config.actor_rollout_ref.actor.fsdp_config.model_dtype == "fp32", "the actor still trains in fp32"
