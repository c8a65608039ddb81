"""Per-token entropy of logits in fp32 chunks of tokens, with its own backward, in place of verl's.

verl's `entropy_from_logits` (verl.utils.torch_functional) runs softmax, logsumexp and `sum(p * logits)` over the
whole (batch, sequence, vocab) tensor in the logits' dtype, and autograd keeps the vocabulary-sized softmax and
product for backward. Without `use_remove_padding` the FSDP engine calls it on the micro-batch's padded logits,
prompt and padding positions included, in the update (entropy_coeff != 0) and in the actor's log-prob pass, so on
Molmo2's 151936-entry vocabulary it moves several copies of the logits per token. Ours reads the logits once per
chunk forward and once backward, keeps only two fp32 numbers per token for backward (log-sum-exp and entropy) and
computes in fp32. The engine looks the function up in verl's module at each call (`verl_F.entropy_from_logits`),
so replacing that one attribute reaches it; engines that bind it at start-up (the remove-padding path) see ours
when the plugin loads first, which `import verl` guarantees.

    H = lse - sum_k p_k x_k,  p = softmax(x)         dH/dx_k = -p_k (log p_k + H)
"""
import torch
from torch.autograd.function import once_differentiable

from molmo_agent.integrations.verl.function_replacement import replace_verl_function
from molmo_agent.integrations.verl.logprobs import chunk_rows

# `MOLMO_AGENT_FAST_ENTROPY=0` keeps verl's function (a baseline measurement with the same code).
SWITCH = "MOLMO_AGENT_FAST_ENTROPY"


def _rows(logits: torch.Tensor) -> int:
    # two fp32 buffers a chunk (the shifted logits and their exponentials): half the log-prob chunk's rows
    return max(1, chunk_rows(logits) // 2)


class _ChunkedEntropy(torch.autograd.Function):
    """Entropy of softmax(logits) per row; saves the logits and two fp32 numbers per row for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:
        entropy = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        log_sum_exp = torch.empty_like(entropy)
        step = _rows(logits)
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            shifted = logits[rows].to(torch.float32, copy=True)
            peak = shifted.amax(dim=-1, keepdim=True)
            shifted.sub_(peak)
            weights = shifted.exp()  # softmax numerators, (rows, vocab)
            total = weights.sum(dim=-1)
            mean_shifted = shifted.mul_(weights).sum(dim=-1).div_(total)  # E_p[x - peak]
            log_total = total.log_()
            entropy[rows] = log_total - mean_shifted
            log_sum_exp[rows] = log_total + peak.squeeze(-1)
        ctx.save_for_backward(logits, log_sum_exp, entropy)
        return entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        logits, log_sum_exp, entropy = ctx.saved_tensors
        grad_output = grad_output.float().unsqueeze(-1)
        grad_logits = torch.empty_like(logits)
        step = _rows(logits)
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            log_p = logits[rows].to(torch.float32, copy=True).sub_(log_sum_exp[rows].unsqueeze(-1))
            p = log_p.exp()
            grad_logits[rows] = log_p.add_(entropy[rows].unsqueeze(-1)).mul_(p).mul_(-grad_output[rows])
        return grad_logits


# verl's engines wrap the function in torch.compile on their remove-padding path; ours is already chunked, and a
# compiled Python loop over a data-dependent chunk count would only add recompilations
@torch.compiler.disable
def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits, -1), computed in fp32 in chunks of tokens.

    logits: (..., vocab), any float dtype. Returns (...) fp32 entropies in nats, differentiable in `logits`.
    """
    flat = _ChunkedEntropy.apply(logits.reshape(-1, logits.shape[-1]))
    return flat.view(logits.shape[:-1])


def patch_verl() -> bool:
    """Make verl's `entropy_from_logits` ours, unless SWITCH is "0"; idempotent."""
    from verl.utils import torch_functional

    return replace_verl_function([torch_functional], "entropy_from_logits", entropy_from_logits, SWITCH,
                                 "molmo_agent's chunked fp32 entropy")
