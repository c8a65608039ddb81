"""verl's micro-batch split and output assembly with one op per jagged field, in place of its per-row unbinds.

On the padded path verl's engine cuts each batch it gets into micro-batches with `chunk_tensordict`
(verl.utils.tensordict_utils), which unbinds every nested field into one tensor per row and nests each micro-batch's
rows again, and `postprocess_batch_func` (verl.workers.engine.utils) joins the micro-batches' per-sample outputs
(log-probs, entropies) the same way. Profiled on an H200 (bench/results/actor_stages_profile_h200_small_2026-12-01
.json), the GPU sits idle ~63 ms at the start of each of the update's mini-batches and 0.3-0.7 s around a log-prob
pass's micro-batches while the host unbinds and re-nests. Ours cuts each plain jagged field into views of its values
at the micro-batches' bounds and joins outputs by concatenating their values and offsets (bench/micro_batches.py:
an iteration's log-prob pass 0.17 -> 0.03 s of host time, its update 0.19 -> 0.08 s, on the CPU); fields that are
not plain jagged go through verl's functions. The FSDP engine bound `postprocess_batch_func` by name at import, so
its name is replaced there too. `MOLMO_AGENT_FAST_MICRO_BATCHES=0` keeps verl's.
"""
import itertools

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils
from verl.workers.engine import utils as engine_utils
from verl.workers.engine.fsdp import transformer_impl as fsdp_engine

from molmo_agent.integrations.verl.function_replacement import replace_verl_function
from molmo_agent.integrations.verl.row_select import is_plain_jagged, jagged, select_jagged_rows

SWITCH = "MOLMO_AGENT_FAST_MICRO_BATCHES"
VERL_CHUNK = tensordict_utils.chunk_tensordict
VERL_POSTPROCESS = engine_utils.postprocess_batch_func


def slice_jagged(nested: torch.Tensor, bounds: list[int]) -> list[torch.Tensor]:
    """A plain jagged nested tensor [B, ..., j, ...] cut at rows `bounds` (0 = b_0 < b_1 < ... = B) into the
    consecutive parts [b_k+1 - b_k, ..., j, ...]: views of its values, no per-row work."""
    offsets = nested.offsets()  # [B + 1]
    host_offsets = offsets.tolist()  # the one host read
    axis = nested._ragged_idx - 1  # the values' ragged axis (values hold no batch dimension)
    parts = []
    for first, last in itertools.pairwise(bounds):
        start, stop = host_offsets[first], host_offsets[last]
        values = nested.values().narrow(axis, start, stop - start).contiguous()  # a view where axis is 0
        lengths = [b - a for a, b in itertools.pairwise(host_offsets[first:last + 1])]
        parts.append(jagged(values, offsets[first:last + 1] - start, nested._ragged_idx, lengths))
    return parts


def chunk_tensordict(td: TensorDict, chunks: int) -> list[TensorDict]:
    """verl's `chunk_tensordict(td, chunks)`: `td` in `chunks` consecutive parts of equal size, its plain jagged
    fields cut by `slice_jagged` and the rest by verl (which lists the nested fields last, as it does)."""
    jagged = [key for key, value in td.items() if is_plain_jagged(value)]
    if not jagged:
        return VERL_CHUNK(td, chunks)
    assert len(td) % chunks == 0, f"expecting td with length divisible by chunks, but got {len(td)} and {chunks}"
    parts = VERL_CHUNK(td.exclude(*jagged), chunks)
    bounds = list(range(0, len(td) + 1, len(td) // chunks))
    for key in jagged:
        for part, rows in zip(parts, slice_jagged(td[key], bounds), strict=True):
            part[key] = rows
    return parts


def concat_jagged(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Plain jagged nested tensors [B_i, ..., j, ...] of one ragged dimension, their rows one after another as
    [sum B_i, ..., j, ...]."""
    ragged_idx = tensors[0]._ragged_idx
    lengths = torch.cat([tensor.offsets().diff() for tensor in tensors])  # [sum B_i]
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])  # [sum B_i + 1]
    values = torch.cat([tensor.values() for tensor in tensors], dim=ragged_idx - 1)  # values hold no batch dim
    return jagged(values, offsets, ragged_idx, lengths.tolist())


def postprocess_batch_func(output_lst: list[dict], indices: list[list[int]] | None, data: TensorDict) -> dict:
    """verl's `postprocess_batch_func(output_lst, indices, data)`: the micro-batches' outputs as one. Each
    per-sample output that every micro-batch gives as a plain jagged nested tensor is joined by `concat_jagged`
    and, where verl formed the micro-batches by token count (`indices`: each one's rows in the batch), put back in
    the batch's order by one gather; verl assembles the rest."""
    model_outputs = [output["model_output"] for output in output_lst if "model_output" in output]
    ours = [key for key in (model_outputs[0] if model_outputs else {})
            if all(is_plain_jagged(model_output.get(key)) for model_output in model_outputs)]
    rest = [output | {"model_output": {key: value for key, value in output["model_output"].items() if key not in ours}}
            if "model_output" in output else output for output in output_lst]
    result = VERL_POSTPROCESS(rest, indices, data)
    restore = None  # micro-batches by token count: row i of the batch sits where their arrival order is i
    if ours and tensordict_utils.get_non_tensor_data(data=data, key="use_dynamic_bsz", default=True):
        restore = torch.argsort(torch.tensor([row for micro_batch in indices for row in micro_batch]))
    for key in ours:
        joined = concat_jagged([model_output[key] for model_output in model_outputs])
        result["model_output"][key] = joined if restore is None else select_jagged_rows(joined, restore)
    return result


def patch_verl() -> bool:
    """Make verl's `chunk_tensordict` and `postprocess_batch_func` ours, unless SWITCH is "0"."""
    return (replace_verl_function([tensordict_utils], "chunk_tensordict", chunk_tensordict, SWITCH,
                                  "micro-batches cut as views of each jagged field's values")
            and replace_verl_function([engine_utils, fsdp_engine], "postprocess_batch_func", postprocess_batch_func,
                                      SWITCH, "micro-batch outputs joined with one concatenation per jagged field"))
