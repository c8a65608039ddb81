"""Our chunked log-probabilities equal an fp32 log_softmax (values and gradients, labels beyond the LM head's
vocabulary included), and after `import verl` they are what verl's engine computes its log-probs with; each
replacement of verl's functions (log-probs, entropy, row selection, response rows) is switchable, idempotent and
logged once."""
import importlib
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from molmo_agent.integrations.verl import entropy, logprobs, micro_batches, response_columns, row_select
from molmo_agent.integrations.verl.logprobs import logprobs_from_logits

VOCAB = 50


def reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """fp32 log_softmax at the labels; 0 where a label is outside the vocabulary."""
    scored = labels < logits.shape[-1]
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, torch.where(scored, labels, 0).unsqueeze(-1))
    return torch.where(scored, logp.squeeze(-1), 0.0)


def sample(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of `shape` + (VOCAB,) with a wide range, and labels, one in four at or above VOCAB (image ids)."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(*shape, VOCAB, generator=generator) * 8).to(dtype)
    labels = torch.randint(0, VOCAB, shape, generator=generator)
    beyond = torch.rand(shape, generator=generator) < 0.25
    labels = torch.where(beyond, VOCAB + torch.randint(0, 10, shape, generator=generator), labels)
    return logits, labels


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # 7 rows a chunk: the shapes below span several chunks and end on a partial one
    monkeypatch.setattr(logprobs, "CPU_CHUNK_ELEMENTS", 7 * VOCAB)


def test_chunks_bound_the_fp32_buffer_for_molmo2s_vocabulary(monkeypatch):
    monkeypatch.undo()
    on_gpu, on_cpu = (logprobs.chunk_rows(torch.empty(1, 151936, device=device)) for device in ("meta", "cpu"))
    assert on_gpu == 3533 and on_gpu * 151936 * 4 <= 2 * 2**30  # many rows per launch, 2 GiB at most
    assert on_cpu == 6 and on_cpu * 151936 * 4 <= 4 * 2**20  # a few rows that stay in cache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(30,), (3, 11)], ids=["tokens", "batch-seq"])
def test_values_match_fp32_log_softmax(dtype, shape):
    logits, labels = sample(shape, dtype)
    before = logits.clone()
    got = logprobs_from_logits(logits, labels)
    assert got.shape == shape and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(logits, labels), atol=1e-5, rtol=0)
    assert (got[labels >= VOCAB] == 0).all()
    assert torch.equal(logits, before), "the logits were modified"


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gradients_match_autograd_of_the_reference(dtype, tolerance):
    logits, labels = sample((3, 11), dtype)
    weights = torch.randn(3, 11, generator=torch.Generator().manual_seed(1))
    ours = logits.clone().requires_grad_()
    (logprobs_from_logits(ours, labels) * weights).sum().backward()
    theirs = logits.float().requires_grad_()
    (reference(theirs, labels) * weights).sum().backward()
    assert ours.grad.dtype == dtype
    # bf16 gradients are the fp32 ones rounded to 8 bits of mantissa
    torch.testing.assert_close(ours.grad.float(), theirs.grad, atol=1e-5, rtol=tolerance)
    assert (ours.grad[labels >= VOCAB] == 0).all(), "an unscored label passed gradient to its row"


def test_mismatched_labels_are_refused_by_name():
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        logprobs_from_logits(torch.zeros(4, VOCAB), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("module, verl_modules, name, phrase", [
    (logprobs, ["verl.utils.torch_functional"], "logprobs_from_logits_v2", "chunked log-softmax"),
    (entropy, ["verl.utils.torch_functional"], "entropy_from_logits", "chunked fp32 entropy"),
    (row_select, ["verl.utils.tensordict_utils"], "index_select_tensor_dict", "jagged rows gathered"),
    (micro_batches, ["verl.utils.tensordict_utils"], "chunk_tensordict", "micro-batches cut"),
    # the FSDP engine bound verl's function by name at import
    (micro_batches, ["verl.workers.engine.utils", "verl.workers.engine.fsdp.transformer_impl"],
     "postprocess_batch_func", "micro-batch outputs joined"),
    # the loss module bound verl's function by name at import: its name is replaced too
    (response_columns, ["verl.workers.utils.padding", "verl.workers.utils.losses"], "no_padding_2_padding",
     "response rows gathered"),
], ids=["log-probs", "entropy", "row-select", "micro-batch-split", "micro-batch-join", "response-rows"])
def test_each_patch_is_switchable_idempotent_and_logged_once(monkeypatch, caplog, module, verl_modules, name, phrase):
    verl_modules = [importlib.import_module(verl_module) for verl_module in verl_modules]

    def verls(*_):
        raise AssertionError("not ours")

    for verl_module in verl_modules:
        monkeypatch.setattr(verl_module, name, verls)
    monkeypatch.setenv(module.SWITCH, "0")
    assert not module.patch_verl()
    assert all(getattr(verl_module, name) is verls for verl_module in verl_modules)
    monkeypatch.delenv(module.SWITCH)
    with caplog.at_level(logging.INFO, logger=module.__name__):
        assert module.patch_verl() and module.patch_verl()
    installed = {getattr(verl_module, name) for verl_module in verl_modules}
    assert len(installed) == 1 and installed.pop().__module__ == module.__name__
    assert len([r for r in caplog.records if phrase in r.getMessage()]) == 1


ENGINE_CHECK = """
import sys
import torch
import verl  # loads molmo_agent through verl's plugin entry point
from verl.utils import torch_functional
from verl.workers.engine.fsdp import transformer_impl

torch.manual_seed(0)
logits = (torch.randn(2, 9, 40) * 8).to(torch.bfloat16)
labels = torch.randint(0, 40, (2, 9))
labels[0, :3] = torch.tensor([40, 45, 49])  # at or above the vocabulary, as Molmo2's image ids
scored = labels < 40
expected = torch.where(scored, torch.log_softmax(logits.float(), -1).gather(
    -1, torch.where(scored, labels, 0).unsqueeze(-1)).squeeze(-1), 0.0)
print(torch_functional.logprobs_from_logits_v2.__module__)
for name, shape in (("rows", (-1, 40)), ("batch-seq", (2, 9, 40))):
    got = transformer_impl.logprobs_from_logits(logits=logits.reshape(shape), labels=labels.reshape(shape[:-1]))
    assert torch.allclose(got.reshape(2, 9), expected, atol=1e-5), (name, got, expected)
"""


def run_engine_check(**env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_PLUGINS", logprobs.SWITCH)},
           **env}
    return subprocess.run([sys.executable, "-c", ENGINE_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)


def test_verls_engine_computes_with_ours_after_import_verl():
    done = run_engine_check()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[0] == logprobs.__name__


def test_switched_off_verls_engine_keeps_its_loop():
    # verl's loop gathers at every label: an id beyond the vocabulary is out of bounds
    done = run_engine_check(**{logprobs.SWITCH: "0"})
    assert done.returncode != 0 and "index" in done.stderr.lower(), done.stderr[-3000:]
    assert done.stdout.split()[0] == "verl.utils.torch_functional"
