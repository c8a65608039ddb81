"""Per-token log-probabilities of labels under logits, vectorized over chunks of tokens, in place of verl's loop.

verl's `logprobs_from_logits` (verl.utils.torch_functional) uses flash-attn's cross-entropy kernel when flash-attn
is installed and torch_npu's on Ascend; otherwise it calls `logprobs_from_logits_v2`, which loops in Python over
the rows of the logits. The FSDP engine passes (tokens, vocab) logits with or without `use_remove_padding`, so
that loop runs once per token, forward and backward. Every module that bound `logprobs_from_logits` by name
(the FSDP engine, which the actor, the reference and the SFT trainer all run; the other engines; the prefix
grouper; the naive rollout) holds verl's one function object, which looks up `logprobs_from_logits_v2` in its
module's namespace at each call: replacing that one attribute reaches every caller, and leaves the flash-attn
and NPU paths as verl chose them. On a GPU each row of that loop costs kernel launches (tens of microseconds a
token); ours runs the same arithmetic over thousands of rows per launch.
"""
import torch
from torch.autograd.function import once_differentiable

from molmo_agent.integrations.verl.function_replacement import replace_verl_function

# `MOLMO_AGENT_FAST_LOGPROBS=0` keeps verl's loop (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_FAST_LOGPROBS"

# fp32 elements upcast at once, one buffer, forward and backward. On a GPU, 2 GiB (3533 rows of Molmo2's 151936
# logits): each chunk's kernels stream gigabytes, so their launch cost (microseconds) vanishes, where the per-row
# loop pays it for every token; the buffer stays a fraction of a micro-batch's logits and their gradient. On the
# CPU a call costs next to nothing and memory bandwidth rules: 4 MiB, a few rows that stay in cache.
GPU_CHUNK_ELEMENTS = 2**29
CPU_CHUNK_ELEMENTS = 2**20


def chunk_rows(logits: torch.Tensor) -> int:
    """Rows of the (tokens, vocab) `logits` upcast to fp32 at once on their device."""
    budget = CPU_CHUNK_ELEMENTS if logits.device.type == "cpu" else GPU_CHUNK_ELEMENTS
    return max(1, budget // logits.shape[-1])


class _ChunkedLogProbs(torch.autograd.Function):
    """log_softmax(logits)[label] per row; saves the logits and one fp32 log-sum-exp per row for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        scored = (labels >= 0) & (labels < vocab)
        index = torch.where(scored, labels, 0).unsqueeze(-1)
        log_sum_exp = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        step = chunk_rows(logits)
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            chunk = logits[rows].to(torch.float32, copy=True)  # a copy: fp32 logits are not overwritten
            peak = chunk.amax(dim=-1, keepdim=True)
            log_sum_exp[rows] = chunk.sub_(peak).exp_().sum(dim=-1).log_() + peak.squeeze(-1)
        picked = logits.gather(-1, index).squeeze(-1).float()
        ctx.save_for_backward(logits, index, scored, log_sum_exp)
        return torch.where(scored, picked - log_sum_exp, 0.0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        # d logp_i / d logits_ij = [j == label_i] - softmax_ij
        logits, index, scored, log_sum_exp = ctx.saved_tensors
        grad_output = torch.where(scored, grad_output.float(), 0.0).unsqueeze(-1)
        grad_logits = torch.empty_like(logits)
        step = chunk_rows(logits)
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            chunk = logits[rows].to(torch.float32, copy=True)
            chunk.sub_(log_sum_exp[rows].unsqueeze(-1)).exp_().mul_(-grad_output[rows])
            chunk.scatter_add_(-1, index[rows], grad_output[rows])
            grad_logits[rows] = chunk
        return grad_logits, None


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits, -1) at `labels`, computed in fp32 in chunks of tokens (`chunk_rows`).

    logits: (..., vocab), any float dtype; labels: (...) integer ids. Returns (...) fp32 log-probabilities,
    differentiable in `logits`. A label outside [0, vocab) (Molmo2's image-block ids sit above its LM head's
    151936 entries; they are never scored) gets 0 and no gradient instead of an out-of-bounds gather.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels must have the logits' shape without the vocabulary dimension: logits "
                         f"{tuple(logits.shape)}, labels {tuple(labels.shape)}")
    flat = _ChunkedLogProbs.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return flat.view(labels.shape)


def patch_verl() -> bool:
    """Make verl's `logprobs_from_logits` fall back to ours instead of its per-row loop, unless SWITCH is "0"."""
    from verl.utils import torch_functional

    return replace_verl_function([torch_functional], "logprobs_from_logits_v2", logprobs_from_logits, SWITCH,
                                 "falls back to molmo_agent's chunked log-softmax")
