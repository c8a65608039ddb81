"""Rows of a TensorDict by index, with each jagged nested tensor gathered in one indexing op, in place of verl's.

verl's `index_select_tensor_dict` (verl.utils.tensordict_utils) selects rows of a nested tensor by unbinding it into
one tensor per row, picking from that list in Python and concatenating again. Its `make_iterator` calls it once per
mini-batch of the actor's update, so each of the update's mini-batches unbinds every row of every nested field of
the whole batch: on the learning recipe's ~3,100 step samples and 27 mini-batches, ~2 M rows of Python work (a third
of the update's host time measured on the CPU, growing as the square of the batch). Our engine's length sort and
verl's micro-batches by token count call it too. Ours computes each selected token's place in the nested tensor's values from
its offsets and gathers them at once; plain tensors, non-tensor stacks and nested tensors that are not plain jagged
(holes, `lengths`) go through verl's own function. verl's iterator and callers look the function up in its module at
each call, so replacing that one attribute reaches them.

    offsets' = [0, cumsum(lengths[indices])]                          (b + 1)
    gather   = repeat(offsets[indices] - offsets'[:-1], lengths[indices]) + arange(offsets'[-1])
"""
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils

from molmo_agent.integrations.verl.function_replacement import replace_verl_function

# `MOLMO_AGENT_FAST_ROW_SELECT=0` keeps verl's function (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_FAST_ROW_SELECT"
VERL_INDEX_SELECT = tensordict_utils.index_select_tensor_dict  # verl's, for what ours leaves to it


def is_plain_jagged(value: object) -> bool:
    """A jagged nested tensor whose rows lie back to back in its values (no holes)."""
    return (isinstance(value, torch.Tensor) and value.is_nested and value.layout == torch.jagged
            and value._lengths is None)


def jagged(values: torch.Tensor, offsets: torch.Tensor, ragged_idx: int, lengths: list[int]) -> torch.Tensor:
    """The plain jagged nested tensor of `values` cut at `offsets` along its ragged dimension `ragged_idx`, rows
    of `lengths` (host ints). Their minimum and maximum are recorded as torch asks: without them `to_padded_tensor`
    pads every row to the total length, where verl's own nested tensors pad to the longest row."""
    nested = torch.nested.nested_tensor_from_jagged(values, offsets, min_seqlen=min(lengths, default=0),
                                                    max_seqlen=max(lengths, default=0))
    nested._ragged_idx = ragged_idx
    return nested


def select_jagged_rows(nested: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows `indices` [b] of a plain jagged nested tensor [B, ..., j, ...] (ragged dimension anywhere), as a nested
    tensor [b, ..., j, ...] of the same ragged dimension."""
    offsets = nested.offsets()  # [B + 1]
    indices = indices.to(offsets.device)
    lengths = offsets.diff()[indices]  # [b]
    row_lengths = lengths.tolist()  # the one host read
    new_offsets = torch.cat([offsets.new_zeros(1), lengths.cumsum(0)])  # [b + 1]
    total = sum(row_lengths)
    # each selected element's place in the values: its row's old start + its place among the selected elements
    gather = torch.repeat_interleave(offsets[:-1][indices] - new_offsets[:-1], lengths, output_size=total)
    gather += torch.arange(total, device=offsets.device)  # [total]
    axis = nested._ragged_idx - 1  # the values' ragged axis (values hold no batch dimension)
    return jagged(nested.values().index_select(axis, gather), new_offsets, nested._ragged_idx, row_lengths)


def index_select_tensor_dict(batch: TensorDict | None, indices: torch.Tensor | list[int]) -> TensorDict | None:
    """verl's `index_select_tensor_dict(batch, indices)`: the rows `indices` (1-D) of `batch`, every key kept."""
    if isinstance(indices, list):
        indices = torch.tensor(indices)
    jagged = [] if batch is None or len(indices) == 0 else [
        key for key, value in batch.items() if is_plain_jagged(value)]
    if not jagged:
        return VERL_INDEX_SELECT(batch, indices)
    rest = VERL_INDEX_SELECT(batch.exclude(*jagged), indices)
    return TensorDict({key: select_jagged_rows(batch[key], indices) if key in jagged else rest.get(key)
                       for key in batch.keys()}, batch_size=[len(indices)])


def patch_verl() -> bool:
    """Make verl's `index_select_tensor_dict` ours, unless SWITCH is "0"."""
    return replace_verl_function([tensordict_utils], "index_select_tensor_dict", index_select_tensor_dict, SWITCH,
                                 "jagged rows gathered in one op")
