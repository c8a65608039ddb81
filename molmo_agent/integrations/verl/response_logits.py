"""The LM head, the log-probs and the entropy at the response positions only, in verl's FSDP engine.

verl's FSDP engine computes the logits of every position of a micro-batch (padding included, without
remove-padding), then the log-probability and entropy of every real one; the actor's loss and the old and
reference log-probs then read the response positions alone (verl's `no_padding_2_padding`). An ALFWorld step sample is a
prompt of ~470 tokens and an answer of ~37, so on Molmo2's 151,936-entry vocabulary most of the head's matmul
and nearly all the vocabulary-sized work serve positions nobody reads. When a micro-batch carries its prompts and
responses and the model takes `logits_positions` (our Molmo2), this engine asks it for the response positions'
logits only, [N, vocab], and returns log-probs and entropies in verl's layout: nested (sequence,) tensors, zero
at the positions it skipped, padded or packed (remove-padding: the sequences one after another in one row).
verl's SFT trainer runs the same engine on batches with a loss mask instead: there the positions are those its
loss reads. Everything else (sequence parallelism, a static packed length, fused kernels, distillation, sum of
squared probabilities, another model, a micro-batch that says neither) takes verl's path unchanged.

A sample's sequence is its prompt then its response; the log-prob of token t + 1 sits at position t, so the
response's scores are positions [prompt_len - 1, prompt_len + response_len - 1), and an SFT sample's are the
positions t whose token t + 1 is in the loss mask.
"""
import functools
import inspect
import logging
import os

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils import torch_functional as verl_F
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

logger = logging.getLogger(__name__)

# `MOLMO_AGENT_RESPONSE_LOGITS=0` keeps verl's every-position path (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_RESPONSE_LOGITS"
POSITIONS = "molmo_agent_response_positions"  # our entry in the engine's output_args
# the micro-batch flags under which verl's own path must run (each read with its default off)
VERL_ONLY = ("use_fused_kernels", "distillation_use_topk", "distillation_only", "calculate_sum_pi_squared")


def response_positions(prompt_lens: torch.Tensor, response_lens: torch.Tensor, width: int) -> torch.Tensor:
    """Bool [B, width]: the positions whose next token is a response token, in right-padded sequences.

    prompt_lens, response_lens: [B] token counts (prompt_lens > 0)."""
    columns = torch.arange(width, device=prompt_lens.device)
    start = (prompt_lens - 1).unsqueeze(1)  # [B, 1]
    return (columns >= start) & (columns < start + response_lens.unsqueeze(1))


def prompt_and_response_lengths(micro_batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[B] token counts of each sample's prompt and response, read as verl's readers of the engine's output read
    them, or None where the micro-batch carries neither: nested prompts and responses, or the left-padded
    prompts' and right-padded responses' columns of the attention mask (`no_padding_2_padding`, the loss's), or
    a nested response mask and the sequences' lengths (`response_from_nested`, the log-prob passes')."""
    keys = micro_batch.keys()
    if "prompts" in keys and "responses" in keys:
        prompts, responses = micro_batch["prompts"], micro_batch["responses"]
        if prompts.is_nested:
            return prompts.offsets().diff(), responses.offsets().diff()
        if "attention_mask" in keys:
            attention_mask = micro_batch["attention_mask"]  # [B, prompt width + response width]
            return attention_mask[:, :prompts.shape[1]].sum(1), attention_mask[:, prompts.shape[1]:].sum(1)
    if "response_mask" in keys and micro_batch["response_mask"].is_nested:
        response_lens = micro_batch["response_mask"].offsets().diff()
        return micro_batch["input_ids"].offsets().diff() - response_lens, response_lens
    return None


def positions_to_score(micro_batch: TensorDict) -> torch.Tensor | None:
    """Packed indices [N], ascending, into the micro-batch's sequences of the positions whose log-probs verl reads
    afterwards, or None where the micro-batch does not say: the positions that predict response tokens (RL
    passes and loss), or those the SFT loss reads (`sft_loss`: the nested loss mask shifted left by one token over
    the packed sequences)."""
    offsets = micro_batch["input_ids"].offsets()  # [B + 1] packed start of each sequence
    lengths = prompt_and_response_lengths(micro_batch)
    if lengths is not None:
        prompt_lens, response_lens = lengths
        if not torch.equal(prompt_lens + response_lens, offsets.diff()):
            raise ValueError("the micro-batch's prompts and responses do not add up to its input_ids: prompt "
                             f"lengths {prompt_lens.tolist()}, response lengths {response_lens.tolist()}, "
                             f"sequence lengths {offsets.diff().tolist()}")
        rows, columns = response_positions(prompt_lens, response_lens, int(offsets.diff().max())).nonzero(
            as_tuple=True)
        return offsets[rows] + columns
    if "loss_mask" in micro_batch.keys() and micro_batch["loss_mask"].is_nested:
        return torch.roll(micro_batch["loss_mask"].values(), shifts=-1, dims=0).nonzero().squeeze(1)
    return None


def spread(values: torch.Tensor, flat: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Per-position `values` [N] placed at their packed indices `flat` [N] of the micro-batch's sequences, zero
    elsewhere, as verl's nested [B, (sequence)] tensor; differentiable in `values`."""
    packed = values.new_zeros(int(cu_seqlens[-1])).index_put((flat,), values)
    return torch.nested.nested_tensor_from_jagged(packed, cu_seqlens)


class ResponseLogits(FSDPEngineWithLMHead):
    """verl's FSDP language-model engine that scores response positions only where it can (module docstring)."""

    @functools.cached_property
    def _model_takes_positions(self) -> bool:
        model = getattr(self.module, "module", self.module)  # FSDP1 wraps the model; FSDP2 is the model
        return "logits_positions" in inspect.signature(model.forward).parameters

    def _scores_responses_only(self, micro_batch: TensorDict) -> bool:
        if os.environ.get(SWITCH, "1") == "0":
            return False
        # packed sequences whole, as one row: sequence parallelism slices them and a static pad lengthens them
        if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True) and (
                self.use_ulysses_sp or self.pad_to_length):
            return False
        pad_mode = tu.get_non_tensor_data(data=micro_batch, key="pad_mode", default=DatasetPadMode.NO_PADDING)
        if pad_mode != DatasetPadMode.NO_PADDING or any(
                tu.get_non_tensor_data(data=micro_batch, key=flag, default=False) for flag in VERL_ONLY):
            return False
        return self._model_takes_positions

    def prepare_model_inputs(self, micro_batch: TensorDict):
        model_inputs, output_args = super().prepare_model_inputs(micro_batch)
        flat = positions_to_score(micro_batch) if self._scores_responses_only(micro_batch) else None
        if flat is not None:
            offsets = micro_batch["input_ids"].offsets()
            rows = torch.searchsorted(offsets, flat, right=True) - 1  # the sequence each position is in
            # [B, L] right-padded, or [1, total] packed; row-major like `flat`: the order of the model's [N, vocab]
            mask = torch.zeros(model_inputs["input_ids"].shape, dtype=torch.bool, device=flat.device)
            if "temperature_rmpad" in output_args:  # packed: position = packed index
                mask[0, flat] = True
            else:
                mask[rows, flat - offsets[rows]] = True
            model_inputs["logits_positions"] = mask
            output_args[POSITIONS] = (rows, flat)
            if not getattr(self, "_said_so", False):
                self._said_so = True
                logger.info("scoring the response positions only: %d of the first micro-batch's %d positions "
                            "(%s=0 scores every position)", rows.numel(), mask.numel(), SWITCH)
        return model_inputs, output_args

    def prepare_model_outputs(self, output, output_args, micro_batch: TensorDict, logits_processor_func):
        if POSITIONS not in output_args:
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        rows, flat = output_args[POSITIONS]
        # each scored position's sample temperature: per packed token, or per sample
        temperature = (output_args["temperature_rmpad"][flat] if "temperature_rmpad" in output_args
                       else output_args["temperature"][rows])
        logits = transformer_impl._scale_logits_by_temperature(
            output.logits, temperature.unsqueeze(-1),  # [N, vocab] / [N, 1]
            is_unit_temperature=output_args.get("temperature_is_one", False))
        cu_seqlens = micro_batch["input_ids"].offsets()
        labels = output_args["input_ids_rmpad_rolled"][flat]  # the next token of each scored position
        # verl's own dispatchers: flash-attn's kernel where installed, else the plugin's chunked log-softmax
        model_output = {"log_probs": spread(transformer_impl.logprobs_from_logits(logits=logits, labels=labels),
                                            flat, cu_seqlens)}
        if tu.get_non_tensor_data(data=micro_batch, key="calculate_entropy", default=False):
            if self.engine_config.entropy_checkpointing:
                entropy = torch.utils.checkpoint.checkpoint(verl_F.entropy_from_logits, logits, use_reentrant=False)
            else:
                entropy = verl_F.entropy_from_logits(logits)
            model_output["entropy"] = spread(entropy, flat, cu_seqlens)
        return model_output
