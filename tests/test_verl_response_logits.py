"""Our engine scores the response positions only. On verl's own micro-batch layouts (nested prompt + response
sequences made by verl's `left_right_2_no_padding`, per-sample temperature), its log-probs, entropies and their
gradients at the responses equal verl's every-position path, as verl's log-prob passes and loss read them
(`response_from_nested`, `no_padding_2_padding`); every other case takes verl's path."""
import logging

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils import torch_functional as verl_F
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.config import FSDPEngineConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
from verl.workers.utils.losses import sft_loss
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding, response_from_nested

from molmo_agent.integrations.verl import response_logits
from molmo_agent.integrations.verl.response_logits import POSITIONS, ResponseLogits, response_positions
from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration, tiny_config

from molmo2_case import SMALL_OVERRIDES

PROMPTS = ([5, 17, 300, 42], [9], [11, 12, 13, 14, 15, 16])
RESPONSES = ([8, 7, 6], [20, 21], [30])


@pytest.fixture(scope="module")
def model() -> Molmo2ForConditionalGeneration:
    torch.manual_seed(0)
    return Molmo2ForConditionalGeneration(tiny_config(**SMALL_OVERRIDES)).eval()


def engine(cls: type, model: torch.nn.Module) -> FSDPEngineWithLMHead:
    """An engine of `cls` with the state its input and output preparation read, without __init__'s process group."""
    built = object.__new__(cls)
    built.module, built.engine_config = model, FSDPEngineConfig()
    built.pad_to_length, built.use_ulysses_sp, built.ulysses_sequence_parallel_size = False, False, 1
    built.compute_entropy_from_logits = verl_F.entropy_from_logits  # verl's packed path calls it
    return built


def nested(rows: list[list[int]]) -> torch.Tensor:
    return torch.nested.as_nested_tensor([torch.tensor(r) for r in rows], layout=torch.jagged)


def micro_batch(layout: str = "left-right", **flags) -> TensorDict:
    """Three samples as verl's engine gets them: nested prompt + response sequences, with the prompts and responses
    as the rollout left them (left-padded prompts, right-padded responses, their attention mask: verl's
    `left_right_2_no_padding` made the rest), nested, or only a nested response mask."""
    width_p, width_r = max(map(len, PROMPTS)), max(map(len, RESPONSES))
    prompts = torch.tensor([[0] * (width_p - len(p)) + p for p in PROMPTS])
    responses = torch.tensor([r + [0] * (width_r - len(r)) for r in RESPONSES])
    attention_mask = torch.cat([prompts != 0, responses != 0], dim=1).long()
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    batch = TensorDict({"input_ids": torch.cat([prompts, responses], dim=1), "attention_mask": attention_mask,
                        "response_mask": attention_mask[:, width_p:], "position_ids": position_ids,
                        "prompts": prompts, "responses": responses,
                        "temperature": torch.tensor([0.7, 1.0, 1.3])}, batch_size=[len(PROMPTS)])
    batch = left_right_2_no_padding(batch)
    if layout == "nested":
        batch["prompts"], batch["responses"] = nested(PROMPTS), nested(RESPONSES)
        batch = batch.exclude("attention_mask")
    if layout == "response mask":  # the layout the trainer's TransferQueue hands the log-prob passes
        batch = batch.exclude("prompts", "responses", "attention_mask", "response_mask")
        batch["response_mask"] = nested([[1] * len(r) for r in RESPONSES])
    tu.assign_non_tensor(batch, **{"use_remove_padding": False, "pad_mode": DatasetPadMode.NO_PADDING,
                                   "calculate_entropy": True, **flags})
    return batch


def run(built: FSDPEngineWithLMHead, batch: TensorDict) -> tuple[dict, dict]:
    """The engine's forward step without the loss: its model inputs' output args and its model output."""
    model_inputs, output_args = built.prepare_model_inputs(batch)
    output = built.module(**model_inputs, use_cache=False)
    return output_args, built.prepare_model_outputs(output, output_args, batch, None)


def test_response_positions_are_those_that_predict_response_tokens():
    mask = response_positions(torch.tensor([4, 1, 6]), torch.tensor([3, 2, 1]), width=8)
    assert mask.nonzero().tolist() == [[0, 3], [0, 4], [0, 5], [1, 0], [1, 1], [2, 5]]


def responses_of(output: torch.Tensor) -> torch.Tensor:
    """The response positions' values [B, longest response], zero-padded, as verl's log-prob passes read them."""
    return response_from_nested(output, nested([[1] * len(r) for r in RESPONSES])).to_padded_tensor(0.0)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("layout", ["left-right", "nested", "response mask"])
def test_log_probs_entropies_and_gradients_at_the_responses_equal_verls(model, layout, packed):
    results = {}
    for cls in (FSDPEngineWithLMHead, ResponseLogits):
        model.zero_grad(set_to_none=True)
        batch = micro_batch(layout, use_remove_padding=packed)
        output_args, output = run(engine(cls, model), batch)
        log_probs, entropy = (responses_of(output[key]) for key in ("log_probs", "entropy"))
        if layout == "left-right":  # the loss reads the same positions its own way
            torch.testing.assert_close(no_padding_2_padding(output["log_probs"], batch), log_probs)
        weights = torch.linspace(-1, 1, log_probs.numel()).view_as(log_probs)
        (log_probs * weights).sum().add(entropy.sum() * 0.01).backward()
        results[cls] = (POSITIONS in output_args, log_probs.detach(), entropy.detach(),
                        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    (verls_scored_all, verl_lp, verl_h, verl_grads), (ours_engaged, our_lp, our_h, our_grads) = results.values()
    assert ours_engaged and not verls_scored_all
    assert verl_lp.shape == (3, 3) and (verl_lp[1, 2:] == 0).all()  # responses padded to the longest
    torch.testing.assert_close(our_lp, verl_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_h.float(), verl_h.float(), atol=1e-5, rtol=1e-5)
    assert our_grads.keys() == verl_grads.keys() and "lm_head.weight" in our_grads
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], verl_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def sft_micro_batch() -> TensorDict:
    """The three samples as verl's SFT trainer hands them to the engine (our PromptResponseDataset's rows): nested
    sequences, positions and loss mask (the responses), one temperature for all."""
    sequences = [p + r for p, r in zip(PROMPTS, RESPONSES)]
    batch = TensorDict({"input_ids": nested(sequences),
                        "position_ids": nested([list(range(len(s))) for s in sequences]),
                        "loss_mask": nested([[0] * len(p) + [1] * len(r) for p, r in zip(PROMPTS, RESPONSES)])},
                       batch_size=[len(sequences)])
    tu.assign_non_tensor(batch, use_remove_padding=False, pad_mode=DatasetPadMode.NO_PADDING, temperature=1.0,
                         dp_size=1, batch_num_tokens=sum(map(len, RESPONSES)))
    return batch


def test_the_sft_loss_and_its_gradients_equal_verls(model):
    results = {}
    for cls in (FSDPEngineWithLMHead, ResponseLogits):
        model.zero_grad(set_to_none=True)
        batch = sft_micro_batch()
        output_args, output = run(engine(cls, model), batch)
        loss, _ = sft_loss(None, output, batch)
        loss.backward()
        results[cls] = (POSITIONS in output_args, loss.detach(),
                        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    (verls_scored_all, verl_loss, verl_grads), (ours_engaged, our_loss, our_grads) = results.values()
    assert ours_engaged and not verls_scored_all
    torch.testing.assert_close(our_loss, verl_loss, atol=1e-6, rtol=1e-5)
    assert our_grads.keys() == verl_grads.keys() and "lm_head.weight" in our_grads
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], verl_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_prompt_positions_read_zero_and_the_engine_says_once_what_it_scores(model, caplog):
    built = engine(ResponseLogits, model)
    with caplog.at_level(logging.INFO, logger=response_logits.__name__):
        _, output = run(built, micro_batch())
        run(built, micro_batch())
    first = output["log_probs"].unbind()[0]  # prompt of 4, response of 3: positions 3, 4, 5 are scored
    assert (first[:3] == 0).all() and (first[3:6] != 0).all() and first[6] == 0
    said = [r.getMessage() for r in caplog.records if "response positions only" in r.getMessage()]
    assert said == ["scoring the response positions only: 6 of the first micro-batch's 21 positions "
                    f"({response_logits.SWITCH}=0 scores every position)"]


@pytest.mark.parametrize("case", ["switched off", "sequence parallel", "static packed length", "fused kernels",
                                  "sum pi squared", "no prompts or nested response mask", "model without the argument"])
def test_every_other_case_takes_verls_path(model, monkeypatch, case):
    flags = {"fused kernels": {"use_fused_kernels": True}, "sum pi squared": {"calculate_sum_pi_squared": True},
             "sequence parallel": {"use_remove_padding": True},
             "static packed length": {"use_remove_padding": True}}.get(case, {})
    batch = micro_batch(**flags)
    if case == "switched off":
        monkeypatch.setenv(response_logits.SWITCH, "0")
    if case == "no prompts or nested response mask":  # nor a loss mask: nothing says which positions are read
        batch = batch.exclude("prompts")
    built = engine(ResponseLogits, model)
    if case == "model without the argument":
        built.__dict__["_model_takes_positions"] = False  # as for any model but ours
    built.use_ulysses_sp = case == "sequence parallel"
    built.pad_to_length = case == "static packed length"
    if case in ("sequence parallel", "static packed length", "fused kernels"):  # verl's own preparation needs more
        assert not built._scores_responses_only(batch)
        return
    model_inputs, output_args = built.prepare_model_inputs(batch)
    assert POSITIONS not in output_args and "logits_positions" not in model_inputs


def test_our_molmo2_takes_the_argument_inside_an_fsdp1_style_wrapper(model):
    wrapper = torch.nn.Module()
    wrapper.module = model
    built = engine(ResponseLogits, wrapper)
    assert built._model_takes_positions


def test_prompts_and_responses_that_miss_the_sequences_are_refused_by_name(model):
    batch = micro_batch()
    batch["attention_mask"][2, -1] = 1  # a response token more than the third sequence holds
    with pytest.raises(ValueError, match="prompts and responses do not add up to its input_ids"):
        engine(ResponseLogits, model).prepare_model_inputs(batch)
