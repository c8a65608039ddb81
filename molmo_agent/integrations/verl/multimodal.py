"""verl's agent-loop manager whose workers give the trainer the images the rollout used (Molmo2).

For each step sample verl's agent-loop worker rebuilds the trainer's image inputs (`multi_modal_inputs`) by
decoding the step's token ids with `skip_special_tokens=True` and running the processor on that text again. That
deletes Molmo2's image blocks (their tokens are special), so the processor finds no `<|image|>` for the step's
images and fails. Our worker computes the image tensors from the step's images alone
(`Molmo2Processor.image_inputs`, which also checks the ids hold each image's block); any other processor keeps
verl's path. Set by our config as `actor_rollout_ref.rollout.agent.agent_loop_manager_class`.

`MOLMO_AGENT_ZERO_TRAINER_PIXELS=1` gives the trainer all-zero `pixel_values` instead: the GPU suite's negative
control, where the trainer's token probabilities must stop matching vLLM's (proving the real pixels arrive).
"""
import os
from typing import Any

import ray
import torch
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from molmo_agent.models.molmo2.processing import Molmo2Processor

ZERO_PIXELS_ENV = "MOLMO_AGENT_ZERO_TRAINER_PIXELS"


_VerlWorker = AgentLoopWorkerTQ.__ray_actor_class__  # the plain class under verl's Ray actor


class Molmo2AgentLoopWorker(_VerlWorker):
    """verl's TransferQueue agent-loop worker, with Molmo2's image inputs taken from the rollout's images."""

    def __init__(self, *args, **kwargs) -> None:
        # Called by name, not inherited: verl's class is reachable only through its actor wrapper, so Ray ships a
        # copy of it inside this class to the worker, where its inherited __init__'s zero-argument super() fails.
        _VerlWorker.__init__(self, *args, **kwargs)

    def _compute_multi_modal_inputs(self, output: Any, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(self.processor, Molmo2Processor):
            return super()._compute_multi_modal_inputs(output, input_ids)
        images = (output.multi_modal_data or {}).get("images")
        if not images:
            return {}
        inputs = self.processor.image_inputs(input_ids.flatten().tolist(), images)
        if os.environ.get(ZERO_PIXELS_ENV) == "1":
            inputs["pixel_values"] = torch.zeros_like(inputs["pixel_values"])
        return inputs


class AgentLoopManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager, running `Molmo2AgentLoopWorker`s."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = ray.remote(Molmo2AgentLoopWorker)
