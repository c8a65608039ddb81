"""Micro-batches of neighbouring lengths on verl's padded path: fewer pad tokens, the same gradient.

Without remove-padding, verl's FSDP engine cuts each batch it gets (a mini-batch of the update, the whole batch of
a log-prob pass, an SFT batch) into micro-batches in arrival order and pads each to its longest sequence. ALFWorld
step samples run from ~170 to ~1000 tokens, so a micro-batch of random ones is padded to nearly the longest of
all: on the learning recipe's step samples, 1.83x the real tokens in the log-prob passes (micro-batches of 128)
and 1.73x in the update (two micro-batches of 64 a mini-batch of 128). This engine hands verl the batch sorted by
length, so that each micro-batch holds neighbours (1.04x and 1.40x: bench/micro_batch_padding.py), and puts the
per-sample outputs (log-probs, entropies) back in the caller's order.

The gradient does not change: verl divides each micro-batch's loss by the token count (or sample count) of the
whole mini-batch (`batch_num_tokens`, `global_batch_size`), so a mini-batch's gradient is a sum over its samples,
whatever micro-batch each falls in (the float summation order aside). Metrics that verl averages over micro-batches
(`actor/ppo_kl`, `actor/pg_clipfrac`) do depend on the grouping.

Left to verl: packed sequences (remove-padding: no pad tokens to save), micro-batches by token count (verl forms
and restores those itself: our SFT config's) and forced groups. `MOLMO_AGENT_SORT_MICRO_BATCHES=0` keeps arrival
order.
"""
import os
from typing import Callable

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

SWITCH = "MOLMO_AGENT_SORT_MICRO_BATCHES"


def length_order(data: TensorDict) -> torch.Tensor | None:
    """Indices [B] that order the batch's sequences by length (stable: ties keep arrival order), or None where verl
    should form the micro-batches itself (module docstring) or the batch is already in that order."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    if any(tu.get_non_tensor_data(data=data, key=flag, default=default)
           for flag, default in (("use_remove_padding", True), ("use_dynamic_bsz", True))):
        return None
    if tu.get_non_tensor_data(data=data, key="force_group_size", default=1) != 1 or not data["input_ids"].is_nested:
        return None
    lengths = data["input_ids"].offsets().diff().cpu()  # [B] tokens of each sequence; indices on the host
    order = torch.sort(lengths, stable=True).indices
    return None if torch.equal(order, torch.arange(len(order))) else order


class LengthSortedMicroBatches(FSDPEngineWithLMHead):
    """verl's FSDP language-model engine fed each batch sorted by sequence length (module docstring)."""

    def forward_backward_batch(self, data: TensorDict, loss_function: Callable, forward_only: bool = False):
        order = length_order(data)
        if order is None:
            return super().forward_backward_batch(data, loss_function, forward_only=forward_only)
        output = super().forward_backward_batch(tu.index_select_tensor_dict(data, order), loss_function,
                                                forward_only=forward_only)
        # per-sample outputs, [B, ...] in sorted order -> the caller's: row i sits where order == i
        if output.get("model_output"):
            sorted_outputs = TensorDict(output["model_output"], batch_size=[len(order)])
            output["model_output"] = dict(tu.index_select_tensor_dict(sorted_outputs, torch.argsort(order)).items())
        return output
