"""A reference model that stays on the GPU: verl's FSDP engine without the CPU offload it forces on forward-only
models.

verl's FSDPEngine offloads every forward-only model (the reference policy) whatever its config says: FSDP1
wraps it with `CPUOffload(offload_params=True)`, FSDP2 with `CPUOffloadPolicy`, and `to()` never moves it. Each
micro-batch then streams all the weights over PCIe. Our engine lets the config decide, as for a trained model:
the reference stays on the GPU unless `actor_rollout_ref.ref.fsdp_config.param_offload` (FSDP1, moved between
calls) or `offload_policy` (FSDP2) asks otherwise. `_build_fsdp_module` and `to` read `forward_only` only to
force that offload, so ours runs verl's own methods with the flag lowered for their duration.

For models that train it changes nothing. engine.py registers it with verl.
"""
import contextlib
import os
from collections.abc import Iterator

import torch
from verl.workers.engine import FSDPEngineWithLMHead

# `MOLMO_AGENT_REF_ON_GPU=0` restores verl's forced offload (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_REF_ON_GPU"


def reference_on_gpu() -> bool:
    """Whether forward-only models follow their offload knobs (SWITCH unset or not "0")."""
    return os.environ.get(SWITCH, "1") != "0"


@contextlib.contextmanager
def offload_not_forced(engine_config) -> Iterator[None]:
    """Lower `engine_config.forward_only` (one of verl's mutable engine-config fields) for the block."""
    engine_config.forward_only = False
    try:
        yield
    finally:
        engine_config.forward_only = True


class FSDPEngineWithGpuReference(FSDPEngineWithLMHead):
    """verl's FSDP language-model engine; a forward-only model is offloaded only when its config asks."""

    def _follows_offload_config(self) -> bool:
        return self.engine_config.forward_only and reference_on_gpu()

    def _build_fsdp_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self._follows_offload_config():
            return super()._build_fsdp_module(module)
        with offload_not_forced(self.engine_config):
            return super()._build_fsdp_module(module)

    def to(self, device: str, model: bool = True, optimizer: bool = True, grad: bool = True):
        if not self._follows_offload_config():
            return super().to(device, model=model, optimizer=optimizer, grad=grad)
        with offload_not_forced(self.engine_config):
            return super().to(device, model=model, optimizer=optimizer, grad=grad)
