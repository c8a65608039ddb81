"""The FSDP language-model engine the plugin gives verl: verl's, with a reference model that stays on the GPU
(reference.py), the LM head and what follows it at the response positions only (response_logits.py), and
micro-batches of neighbouring lengths on the padded path (length_sorted.py).

It is registered in verl's engine registry for NVIDIA GPUs (the vendor-specific key, looked up before the
device-wide one), so every FSDP language-model engine on them is ours.
"""
import functools
import logging

from verl.workers.engine import EngineRegistry

from molmo_agent.integrations.verl import length_sorted, reference, response_logits

logger = logging.getLogger(__name__)

BACKENDS = ("fsdp", "fsdp2")
DEVICE, VENDOR = "cuda", "nvidia"


class MolmoAgentFSDPEngine(length_sorted.LengthSortedMicroBatches, response_logits.ResponseLogits,
                           reference.FSDPEngineWithGpuReference):
    """verl's FSDPEngineWithLMHead with the three changes; each keeps its own switch (`reference.SWITCH`,
    `response_logits.SWITCH`, `length_sorted.SWITCH`)."""


@functools.cache
def register_engine() -> None:
    """Register our engine for verl's FSDP language models on NVIDIA GPUs (once per process)."""
    EngineRegistry.register(model_type="language_model", backend=list(BACKENDS), device=DEVICE,
                            vendor=VENDOR)(MolmoAgentFSDPEngine)
    logger.info("verl's FSDP language-model engine on %s GPUs: molmo_agent's MolmoAgentFSDPEngine (reference "
                "offloaded only when its config asks, %s=0 restores verl's forced offload; response positions "
                "scored alone, %s=0 scores every position; padded micro-batches of neighbouring lengths, %s=0 "
                "keeps arrival order)", VENDOR, reference.SWITCH, response_logits.SWITCH, length_sorted.SWITCH)
