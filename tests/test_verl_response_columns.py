"""Our response rows of a packed model output equal verl's `no_padding_2_padding` (values and gradients, nested or
flat outputs, extra dimensions, a fixed response width wider or narrower than the responses), leave the padded
layout to verl, refuse an output that does not match its sequences, and are what verl's actor loss calls after
`import verl`."""
import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu

from molmo_agent.integrations.verl.response_columns import VERL_NO_PADDING_2_PADDING, no_padding_2_padding

PROMPTS, RESPONSES = (4, 1, 6, 3), (2, 5, 1, 3)


def packed(extra: tuple[int, ...] = (), width: int | None = None) -> tuple[torch.Tensor, TensorDict]:
    """A packed output (total_tokens, *extra) with its batch's nested prompts and responses."""
    g = torch.Generator().manual_seed(0)
    data = TensorDict({
        "prompts": tu.nested_tensor_from_tensor_list([torch.randint(0, 9, (n,), generator=g) for n in PROMPTS]),
        "responses": tu.nested_tensor_from_tensor_list([torch.randint(0, 9, (n,), generator=g) for n in RESPONSES]),
    }, batch_size=[len(PROMPTS)])
    if width is not None:
        tu.assign_non_tensor(data, max_response_len=width)
    return torch.randn(sum(PROMPTS) + sum(RESPONSES), *extra, generator=g), data


@pytest.mark.parametrize("extra, width", [((), None), ((3,), None), ((), 7), ((), 2)],
                         ids=["flat", "extra-dimension", "wider", "narrower"])
def test_values_and_gradients_equal_verls(extra, width):
    values, data = packed(extra, width)
    ours_in, verls_in = values.clone().requires_grad_(), values.clone().requires_grad_()
    ours, verls = no_padding_2_padding(ours_in, data), VERL_NO_PADDING_2_PADDING(verls_in, data)
    assert ours.shape == verls.shape and torch.equal(ours, verls)
    weights = torch.randn(verls.shape, generator=torch.Generator().manual_seed(1))
    (ours * weights).sum().backward()
    (verls * weights).sum().backward()
    assert torch.equal(ours_in.grad, verls_in.grad)


def test_a_nested_output_is_read_through_its_values():
    values, data = packed()
    offsets = torch.tensor([0, *torch.tensor(PROMPTS).add(torch.tensor(RESPONSES)).cumsum(0).tolist()])
    nested = torch.nested.nested_tensor_from_jagged(values, offsets)
    assert torch.equal(no_padding_2_padding(nested, data), VERL_NO_PADDING_2_PADDING(values, data))


def test_the_padded_layout_is_left_to_verl(monkeypatch):
    from molmo_agent.integrations.verl import response_columns

    calls = []
    monkeypatch.setattr(response_columns, "VERL_NO_PADDING_2_PADDING", lambda tensor, data: calls.append(1) or "verl")
    data = TensorDict({"prompts": torch.zeros(2, 3, dtype=torch.long), "responses": torch.zeros(2, 2)}, batch_size=[2])
    assert no_padding_2_padding(torch.zeros(10), data) == "verl" and calls == [1]


def test_an_output_that_does_not_match_its_sequences_is_refused():
    values, data = packed()
    with pytest.raises(ValueError, match="packed output of 29 rows for sequences of 25 tokens"):
        no_padding_2_padding(torch.cat([values, values[:4]]), data)


def test_verls_actor_loss_calls_ours_after_import_verl():
    import verl  # noqa: F401  (the plugin's registration replaces the function)
    from verl.workers.utils import losses, padding

    assert losses.no_padding_2_padding is no_padding_2_padding and padding.no_padding_2_padding is no_padding_2_padding
