"""Our engine hands verl each padded batch sorted by length: micro-batches of neighbours carry fewer pad tokens,
the per-sample outputs come back in the caller's order, and the gradient (verl's loss normalized over the whole
batch) is the one of arrival order. The engine around it is verl's own split and assembly (`prepare_micro_batches`,
`postprocess_batch_func`) with the forward step's model call, output preparation and SFT loss."""
import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine.utils import postprocess_batch_func, prepare_micro_batches
from verl.workers.utils.losses import sft_loss

from molmo_agent.integrations.verl import length_sorted
from molmo_agent.integrations.verl.length_sorted import LengthSortedMicroBatches, length_order
from molmo_agent.integrations.verl.response_logits import ResponseLogits
from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration, tiny_config

from molmo2_case import SMALL_OVERRIDES
from test_verl_response_logits import engine, nested

LENGTHS = (9, 3, 12, 4, 10, 2)  # arrival order: each pair of neighbours is a long and a short sequence


class ArrivalOrder(ResponseLogits):
    """verl's micro-batch loop without its process group: split, forward, SFT loss, backward, assembly."""

    def forward_backward_batch(self, data: TensorDict, loss_function, forward_only: bool = False):
        micro_batches, indices = prepare_micro_batches(data)
        self.padded_tokens = sum(len(mb) * int(mb["input_ids"].offsets().diff().max()) for mb in micro_batches)
        outputs = []
        for micro_batch in micro_batches:
            model_inputs, output_args = self.prepare_model_inputs(micro_batch)
            model_output = self.prepare_model_outputs(self.module(**model_inputs, use_cache=False), output_args,
                                                      micro_batch, None)
            loss, _ = loss_function(None, model_output, micro_batch)
            loss.backward()
            outputs.append({"model_output": {"log_probs": model_output["log_probs"].detach()}, "loss": loss})
        return postprocess_batch_func(outputs, indices, data)


class Sorted(LengthSortedMicroBatches, ArrivalOrder):
    pass


@pytest.fixture(scope="module")
def model() -> Molmo2ForConditionalGeneration:
    torch.manual_seed(0)
    return Molmo2ForConditionalGeneration(tiny_config(**SMALL_OVERRIDES)).eval()


def batch(**flags) -> TensorDict:
    """Six SFT samples as verl's SFT trainer hands them over: nested ids, positions and loss mask (the last half
    of each sequence), two a micro-batch."""
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(5, 300, (n,), generator=generator).tolist() for n in LENGTHS]
    loss_masks = [[0] * (n - n // 2) + [1] * (n // 2) for n in LENGTHS]
    data = TensorDict({"input_ids": nested(sequences), "position_ids": nested([list(range(n)) for n in LENGTHS]),
                       "loss_mask": nested(loss_masks)}, batch_size=[len(LENGTHS)])
    tu.assign_non_tensor(data, **{"use_remove_padding": False, "use_dynamic_bsz": False,
                                  "micro_batch_size_per_gpu": 2, "pad_mode": DatasetPadMode.NO_PADDING,
                                  "temperature": 1.0, "dp_size": 1, "batch_num_tokens": sum(map(sum, loss_masks)),
                                  **flags})
    return data


def test_the_order_sorts_by_length_and_keeps_ties_in_arrival_order():
    assert length_order(batch()).tolist() == [5, 1, 3, 0, 4, 2]
    ties = TensorDict({"input_ids": nested([[1, 2], [3], [4, 5], [6]])}, batch_size=[4])
    tu.assign_non_tensor(ties, use_remove_padding=False, use_dynamic_bsz=False)
    assert length_order(ties).tolist() == [1, 3, 0, 2]


@pytest.mark.parametrize("flags", [{"use_remove_padding": True}, {"use_dynamic_bsz": True},
                                   {"force_group_size": 2}])
def test_verl_forms_packed_dynamic_and_grouped_micro_batches_itself(flags):
    assert length_order(batch(**flags)) is None


def test_the_switch_keeps_arrival_order(monkeypatch):
    monkeypatch.setenv(length_sorted.SWITCH, "0")
    assert length_order(batch()) is None


def test_a_batch_already_in_order_is_left_as_it_is():
    data = batch()
    assert length_order(tu.index_select_tensor_dict(data, length_order(data))) is None


def test_sorted_micro_batches_carry_fewer_pad_tokens_and_give_the_same_outputs_and_gradient(model):
    results = {}
    for cls in (ArrivalOrder, Sorted):
        model.zero_grad(set_to_none=True)
        built = engine(cls, model)
        output = built.forward_backward_batch(batch(), sft_loss)
        results[cls] = (built.padded_tokens, output["model_output"]["log_probs"],
                        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    (arrival_tokens, arrival_lp, arrival_grads), (sorted_tokens, sorted_lp, sorted_grads) = results.values()
    assert (arrival_tokens, sorted_tokens) == (2 * (9 + 12 + 10), 2 * (3 + 9 + 12))
    assert [len(t) for t in sorted_lp.unbind()] == list(LENGTHS)  # the caller's order
    for ours, verls in zip(sorted_lp.unbind(), arrival_lp.unbind()):
        torch.testing.assert_close(ours, verls, atol=1e-5, rtol=1e-5)
    assert sorted_grads.keys() == arrival_grads.keys() and "lm_head.weight" in sorted_grads
    for name in sorted_grads:
        torch.testing.assert_close(sorted_grads[name], arrival_grads[name], atol=1e-6, rtol=1e-4, msg=name)
