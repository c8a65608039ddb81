"""The response tokens' rows of a packed model output, gathered at once, in place of verl's per-sample loop.

verl's actor loss (`ppo_loss`, verl.workers.utils.losses) turns the engine's packed per-token log-probs and
entropies (total_tokens, ...) into (batch, max_response_len, ...) with `no_padding_2_padding`, which loops over
the samples in Python and slices each by its offsets — tensors on the GPU, so two host reads (device syncs), a
slice and a pad per sample forward, and their gradients backward; twice a micro-batch (log-probs, entropy), ~6,000
samples in an update of the learning recipe. Ours builds the index of every response token from the offsets and
gathers once; columns past a response are 0, as verl's padding makes them. The padded layout (prompts not nested)
stays verl's. verl's loss module bound the function by name at import, so that name is replaced with the padding
module's.

    end_i    = prompt_1 + response_1 + ... + prompt_i + response_i        (sequence i's end in the packed rows)
    row_ij   = end_i - response_i - 1 + j,   j < response_i               (the logits' left shift by one)
"""
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.utils import padding

from molmo_agent.integrations.verl.function_replacement import replace_verl_function

# `MOLMO_AGENT_FAST_RESPONSE_COLUMNS=0` keeps verl's loop (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_FAST_RESPONSE_COLUMNS"
VERL_NO_PADDING_2_PADDING = padding.no_padding_2_padding  # verl's, for the padded layout


def no_padding_2_padding(tensor: torch.Tensor, data: TensorDict) -> torch.Tensor:
    """verl's `no_padding_2_padding(tensor, data)`: each sample's response rows of the packed `tensor`
    (total_tokens, ...) (nested or flat), as (batch, max_response_len, ...) right-padded with 0."""
    if not data["prompts"].is_nested:
        return VERL_NO_PADDING_2_PADDING(tensor, data)
    values = tensor.values() if tensor.is_nested else tensor  # (total_tokens, ...)
    prompt_lens = data["prompts"].offsets().diff()  # [b]
    response_lens = data["responses"].offsets().diff()  # [b]
    width = tu.get_non_tensor_data(data=data, key="max_response_len", default=-1)
    if width < 0:
        width = int(response_lens.max())
    ends = (prompt_lens + response_lens).cumsum(0)  # [b]
    total, empty_prompt = ends[-1].item(), prompt_lens.eq(0).any().item()
    if total != values.shape[0] or empty_prompt:
        raise ValueError(f"packed output of {values.shape[0]} rows for sequences of {total} tokens, or an empty "
                         f"prompt ({empty_prompt}): the response rows assume prompt > 0 and one row per token")
    columns = torch.arange(width, device=values.device)  # [R]
    rows = (ends - response_lens - 1)[:, None] + columns  # [b, R]
    inside = (columns < response_lens[:, None]).view(*rows.shape, *[1] * (values.dim() - 1))  # [b, R, 1...]
    gathered = values[rows.clamp(max=values.shape[0] - 1)]  # [b, R, ...]
    return torch.where(inside, gathered, torch.zeros((), dtype=values.dtype, device=values.device))


def patch_verl() -> bool:
    """Make verl's `no_padding_2_padding` ours (the padding module's and the loss module's name), unless SWITCH
    is "0"."""
    from verl.workers.utils import losses

    return replace_verl_function([padding, losses], "no_padding_2_padding", no_padding_2_padding, SWITCH,
                                 "response rows gathered in one op")
