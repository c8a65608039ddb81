"""Our row selection of a TensorDict equals verl's `index_select_tensor_dict` (values, ragged dimension, key order,
non-tensor entries) for every kind of field a step-sample batch holds, and it is what verl's update iterator uses
after `import verl`."""
import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from molmo_agent.integrations.verl import row_select
from molmo_agent.integrations.verl.row_select import VERL_INDEX_SELECT, index_select_tensor_dict, is_plain_jagged

LENGTHS = (5, 1, 7, 3, 4, 2)


def jagged(rows: list[torch.Tensor], ragged_idx: int = 1) -> torch.Tensor:
    return tu.nested_tensor_from_tensor_list(rows, ragged_idx=ragged_idx)


def step_batch() -> TensorDict:
    """Six rows: token ids [B, j], per-token features [B, j, 2], a ragged last dimension [B, 3, j] (ragged index 2),
    a plain tensor, a per-row non-tensor stack and one scalar entry."""
    g = torch.Generator().manual_seed(0)
    return tu.get_tensordict({
        "input_ids": jagged([torch.randint(0, 100, (n,), generator=g) for n in LENGTHS]),
        "features": jagged([torch.randn(n, 2, generator=g) for n in LENGTHS]),
        "channels_first": jagged([torch.randn(3, n, generator=g) for n in LENGTHS], ragged_idx=2),
        "advantages": torch.randn(len(LENGTHS), 4, generator=g),
        "uid": [f"game-{i}" for i in range(len(LENGTHS))],
    }, non_tensor_dict={"temperature": 0.7})


def assert_same(ours: TensorDict, verls: TensorDict) -> None:
    assert list(ours.keys()) == list(verls.keys()) and ours.batch_size == verls.batch_size
    for key in verls.keys():
        a, b = ours.get(key), verls.get(key)
        if isinstance(b, torch.Tensor) and b.is_nested:
            assert a._ragged_idx == b._ragged_idx, key
            if b.dim() == 2:  # padded to the longest row (verl's own 3-D nested tensors pad to the total length)
                assert a.to_padded_tensor(0).shape == b.to_padded_tensor(0).shape, key
            assert all(torch.equal(x, y) for x, y in zip(a.unbind(), b.unbind(), strict=True)), key
        elif isinstance(b, torch.Tensor):
            assert torch.equal(a, b), key
        else:
            assert a.tolist() == b.tolist() if b.shape else a.data == b.data, key


@pytest.mark.parametrize("indices", [
    [2, 0, 5], torch.tensor([5, 4, 3, 2, 1, 0]), torch.tensor([1, 1, 4]), [3],
], ids=["list", "reversed", "repeats", "one-row"])
def test_rows_equal_verls_for_every_kind_of_field(indices):
    batch = step_batch()
    assert_same(index_select_tensor_dict(batch, indices), VERL_INDEX_SELECT(batch, indices))


def test_a_nested_tensor_with_holes_is_left_to_verl():
    # a view whose rows do not lie back to back in its values (narrowed rows): verl's per-row path selects it
    values = torch.arange(24.0).view(4, 6)
    narrowed = torch.nested.narrow(values, 1, torch.tensor([0, 1, 2, 0]), torch.tensor([2, 5, 3, 6]),
                                   layout=torch.jagged)
    batch = TensorDict({"narrowed": narrowed, "ids": jagged([torch.arange(n) for n in (1, 2, 3, 4)])},
                       batch_size=[4])
    assert not is_plain_jagged(narrowed) and is_plain_jagged(batch["ids"])
    assert_same(index_select_tensor_dict(batch, [3, 1]), VERL_INDEX_SELECT(batch, [3, 1]))


def test_verls_update_iterator_selects_with_ours_after_import_verl(monkeypatch):
    import verl  # noqa: F401  (the plugin's registration replaces the function)

    assert tu.index_select_tensor_dict is index_select_tensor_dict
    calls, ours = [], row_select.select_jagged_rows
    monkeypatch.setattr(row_select, "select_jagged_rows",
                        lambda nested, indices: calls.append(len(indices)) or ours(nested, indices))
    batch = step_batch()
    mini_batches = list(tu.make_iterator(batch, mini_batch_size=2, epochs=1, seed=1,
                                         dataloader_kwargs={"shuffle": True}))
    assert len(mini_batches) == 3 and calls == [2] * 3 * 3  # three jagged fields in each of three mini-batches
    uids = sorted(uid for mini_batch in mini_batches for uid in mini_batch["uid"])
    assert uids == sorted(batch["uid"])
