"""Our chunked entropy equals an fp32 entropy of the softmax (values and gradients), also under torch.compile,
and after `import verl` it is what verl's engine computes its entropy with."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from molmo_agent.integrations.verl import entropy, logprobs
from molmo_agent.integrations.verl.entropy import entropy_from_logits

VOCAB = 50


def reference(logits: torch.Tensor) -> torch.Tensor:
    """-sum p log p in fp32."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def sample(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Logits of `shape` + (VOCAB,): a wide range, and one peaked row (entropy near 0) among flat ones."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, VOCAB, generator=generator) * 8
    logits.view(-1, VOCAB)[0, 3] = 200.0
    return logits.to(dtype)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # 7 rows a log-prob chunk, so 3 an entropy chunk: the shapes below span several and end on a partial one
    monkeypatch.setattr(logprobs, "CPU_CHUNK_ELEMENTS", 7 * VOCAB)


def test_chunks_hold_half_the_log_prob_rows(monkeypatch):
    monkeypatch.undo()
    rows = entropy._rows(torch.empty(1, 151936, device="meta"))
    assert rows == 3533 // 2 and 2 * rows * 151936 * 4 <= 2 * 2**30  # two fp32 buffers, 2 GiB in all


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(31,), (3, 11)], ids=["tokens", "batch-seq"])
def test_values_match_fp32_entropy(dtype, shape):
    logits = sample(shape, dtype)
    before = logits.clone()
    got = entropy_from_logits(logits)
    assert got.shape == shape and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(logits), atol=1e-5, rtol=1e-5)
    assert got.view(-1)[0] < 1e-6 and (got <= torch.log(torch.tensor(float(VOCAB))) + 1e-5).all()
    assert torch.equal(logits, before), "the logits were modified"


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gradients_match_autograd_of_the_reference(dtype, tolerance):
    logits = sample((3, 11), dtype)
    weights = torch.randn(3, 11, generator=torch.Generator().manual_seed(1))
    ours = logits.clone().requires_grad_()
    (entropy_from_logits(ours) * weights).sum().backward()
    theirs = logits.float().requires_grad_()
    (reference(theirs) * weights).sum().backward()
    assert ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad.float(), theirs.grad, atol=1e-5, rtol=tolerance)


def test_under_torch_compile_it_is_the_same_function():
    # verl's remove-padding path compiles the entropy function it finds at start-up
    logits = sample((2, 9), torch.float32, seed=2)
    compiled, eager = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    got = torch.compile(entropy_from_logits, dynamic=True)(compiled)
    got.sum().backward()
    entropy_from_logits(eager).sum().backward()
    torch.testing.assert_close(got, entropy_from_logits(logits), atol=1e-6, rtol=0)
    torch.testing.assert_close(compiled.grad, eager.grad, atol=1e-5, rtol=1e-6)


# The engine's padded path calls `verl_F.entropy_from_logits` on (batch, sequence, vocab) logits.
ENGINE_CHECK = """
import torch
import verl  # loads molmo_agent through verl's plugin entry point
from verl.workers.engine.fsdp import transformer_impl

print(transformer_impl.verl_F.entropy_from_logits.__module__)
logits = (torch.randn(2, 9, 40) * 8).to(torch.bfloat16)
log_p = torch.log_softmax(logits.float(), -1)
got = transformer_impl.verl_F.entropy_from_logits(logits)
assert torch.allclose(got.float(), -(log_p.exp() * log_p).sum(-1), atol=1e-5), got
"""


def run_engine_check(**env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_PLUGINS", entropy.SWITCH)}, **env}
    return subprocess.run([sys.executable, "-c", ENGINE_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)


def test_verls_engine_computes_with_ours_after_import_verl():
    done = run_engine_check()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[0] == entropy.__name__


def test_switched_off_verls_engine_keeps_its_own():
    # verl's computes in the logits' dtype: bf16 entropies, off from the fp32 ones by more than 1e-5
    done = run_engine_check(**{entropy.SWITCH: "0"})
    assert done.stdout.split()[0] == "verl.utils.torch_functional"
    assert done.returncode != 0 and "AssertionError" in done.stderr, done.stderr[-3000:]
