"""Our micro-batch split and output assembly equal verl's `chunk_tensordict` and `postprocess_batch_func` for every
kind of field a step-sample batch holds, in arrival order and for micro-batches formed by token count, and they
are what verl's engine uses after `import verl`."""
import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine import utils as engine_utils
from verl.workers.engine.fsdp import transformer_impl as fsdp_engine

from molmo_agent.integrations.verl import micro_batches
from molmo_agent.integrations.verl.micro_batches import (VERL_CHUNK, VERL_POSTPROCESS, chunk_tensordict,
                                                         postprocess_batch_func)

from test_verl_row_select import LENGTHS, assert_same, jagged, step_batch


@pytest.mark.parametrize("chunks", [1, 2, 3, 6])
def test_micro_batches_equal_verls(chunks):
    batch = step_batch()
    ours, verls = chunk_tensordict(batch, chunks), VERL_CHUNK(batch, chunks)
    assert len(ours) == len(verls) == chunks
    for our_part, verl_part in zip(ours, verls, strict=True):  # verl's parts list the nested fields last
        assert sorted(our_part.keys()) == sorted(verl_part.keys())
        assert_same(our_part.select(*verl_part.keys()), verl_part)


def micro_batch_outputs(rows: list[list[int]]) -> list[dict]:
    """What the engine's forward steps return for micro-batches holding `rows` of a six-sample batch: per-sample
    log-probs [b, j], per-token features [b, j, 2] and [b, 3, j] (ragged index 2), a loss and metrics each."""
    g = torch.Generator().manual_seed(1)
    return [{"model_output": {"log_probs": jagged([torch.randn(LENGTHS[i], generator=g) for i in part]),
                              "features": jagged([torch.randn(LENGTHS[i], 2, generator=g) for i in part]),
                              "channels_first": jagged([torch.randn(3, LENGTHS[i], generator=g) for i in part],
                                                       ragged_idx=2)},
             "loss": torch.tensor(float(n)), "metrics": {"actor/pg_loss": [float(n)]}} for n, part in enumerate(rows)]


def batch_flags(use_dynamic_bsz: bool) -> TensorDict:
    return tu.get_tensordict({"input_ids": jagged([torch.arange(n) for n in LENGTHS])},
                             non_tensor_dict={"use_dynamic_bsz": use_dynamic_bsz,
                                              "pad_mode": DatasetPadMode.NO_PADDING})


def assert_same_output(ours: dict, verls: dict) -> None:
    assert sorted(ours["model_output"]) == sorted(verls["model_output"])
    for key, verl_value in verls["model_output"].items():
        our_value = ours["model_output"][key]
        assert our_value._ragged_idx == verl_value._ragged_idx, key
        if verl_value.dim() == 2:  # padded to the longest row, as verl's own [B, j] nested tensors
            assert our_value.to_padded_tensor(0).shape == verl_value.to_padded_tensor(0).shape, key
        assert all(torch.equal(a, b) for a, b in zip(our_value.unbind(), verl_value.unbind(), strict=True)), key
    assert [loss.item() for loss in ours["loss"]] == [loss.item() for loss in verls["loss"]]
    assert ours["metrics"] == verls["metrics"]


@pytest.mark.parametrize("rows, use_dynamic_bsz", [
    ([[0, 1], [2, 3], [4, 5]], False),
    ([[3, 0], [5], [1, 2, 4]], True),  # micro-batches by token count: the batch's order comes back
], ids=["arrival-order", "token-count"])
def test_joined_outputs_equal_verls(rows, use_dynamic_bsz):
    indices = rows if use_dynamic_bsz else None
    data = batch_flags(use_dynamic_bsz)
    ours = postprocess_batch_func(micro_batch_outputs(rows), indices, data)
    assert_same_output(ours, VERL_POSTPROCESS(micro_batch_outputs(rows), indices, data))
    if use_dynamic_bsz:  # row i of the batch has row i's length
        assert ours["model_output"]["log_probs"].offsets().diff().tolist() == list(LENGTHS)


def test_an_output_with_holes_is_left_to_verl():
    outputs = micro_batch_outputs([[0, 1], [2, 3]])
    for output in outputs:  # rows narrowed out of a padded tensor do not lie back to back in its values
        padded = torch.randn(2, 8)
        output["model_output"]["narrowed"] = torch.nested.narrow(padded, 1, torch.tensor([0, 1]), torch.tensor([3, 5]),
                                                                 layout=torch.jagged)
    data = batch_flags(False)
    assert_same_output(postprocess_batch_func(outputs, None, data), VERL_POSTPROCESS(outputs, None, data))


def test_verls_engine_splits_and_joins_with_ours_after_import_verl(monkeypatch):
    import verl  # noqa: F401  (the plugin's registration replaces the functions)

    assert tu.chunk_tensordict is chunk_tensordict
    assert engine_utils.postprocess_batch_func is postprocess_batch_func
    assert fsdp_engine.postprocess_batch_func is postprocess_batch_func  # bound by name at its import
    calls, ours = [], micro_batches.slice_jagged
    monkeypatch.setattr(micro_batches, "slice_jagged",
                        lambda nested, bounds: calls.append(bounds) or ours(nested, bounds))
    batch = step_batch()
    tu.assign_non_tensor(batch, use_dynamic_bsz=False, micro_batch_size_per_gpu=2)
    parts, _ = engine_utils.prepare_micro_batches(batch)
    assert [len(part) for part in parts] == [2, 2, 2] and calls == [[0, 2, 4, 6]] * 3  # once a jagged field
    verls = VERL_CHUNK(batch, 3)[1]
    assert_same(parts[1].select(*verls.keys()), verls)


def test_verls_functions_stay_with_the_switch_off(monkeypatch):
    monkeypatch.setattr(tu, "chunk_tensordict", VERL_CHUNK)
    monkeypatch.setattr(fsdp_engine, "postprocess_batch_func", VERL_POSTPROCESS)
    monkeypatch.setenv(micro_batches.SWITCH, "0")
    assert not micro_batches.patch_verl()
    assert tu.chunk_tensordict is VERL_CHUNK and fsdp_engine.postprocess_batch_func is VERL_POSTPROCESS
