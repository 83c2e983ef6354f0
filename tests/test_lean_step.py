"""sweep.engine.sequence_logps: completion log-probs through the LM head a slice of positions at
a time (sweep.engine.chunked_head) equal the full-logits computation, values and gradients,
whatever the slice; models whose logits are not their plain head's output fall back to the
model's own head (boolean `logits_to_keep`, else full logits)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from objectives.logprobs import completion_logps
from sweep.data.tokenize import TokenizedPair
from sweep.engine import chunked_head
from sweep.engine import sequence_logps as step
from sweep.engine.collate import PairCollator
from sweep.models.loading import load_causal_lm

ITEMS = [TokenizedPair([5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]), TokenizedPair([20], [21, 22, 23, 24, 25], [26]),
         TokenizedPair([30, 31, 32], [33], [34, 35])]
WEIGHTS = torch.arange(1.0, 7.0)  # a different upstream gradient per sequence


class NoKeep(nn.Module):
    """A causal LM whose forward takes no `logits_to_keep` and names no output head (older or
    remote-code models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


class SoftCapped(nn.Module):
    """A model that changes its logits after the head (Gemma-2's soft-capping), naming its head."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask, use_cache=False, logits_to_keep=0):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         logits_to_keep=logits_to_keep)
        out.logits = 2.0 * torch.tanh(out.logits / 2.0)
        return out


def full(model, batch):
    logits = step.forward_logits(model, batch)
    return completion_logps(logits, batch["input_ids"], batch["completion_mask"])


def grads_of(model, fn):
    model.zero_grad()
    out = fn()
    (out * WEIGHTS).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("positions", [None, 3], ids=["one-slice", "slices-of-3"])
def test_chunked_head_equals_full_logits_and_gradients(positions, monkeypatch):
    if positions is not None:  # 19 completion tokens in 3-position slices: the recomputing backward
        monkeypatch.setattr(chunked_head, "SLICE_FLOATS", positions * 2048)
    torch.manual_seed(0)
    model = load_causal_lm("builtin:tiny-gpt2").train()
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    sums, grads = grads_of(model, lambda: step.sequence_logps(model, batch)[0])
    assert step._HEAD[model] is True and model not in step._COMPACT  # the model's own head never ran
    want, want_grads = grads_of(model, lambda: full(model, batch)[0])
    torch.testing.assert_close(sums, want, rtol=1e-5, atol=1e-4)
    assert step.sequence_logps(model, batch)[1].tolist() == [2, 5, 1, 4, 1, 2]
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # slices sum in another order


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_logps_values_squares_and_gradients(bias, dtype):
    """Against autograd through the plain expression: log-probs, WPO's log sum p^2, and the
    gradients of hidden states, weight and bias, over slices that do not divide K."""
    torch.manual_seed(0)
    k, h, v = 37, 16, 101
    hidden = torch.randn(k, h, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, dtype=dtype, requires_grad=True)
    b = torch.randn(v, dtype=dtype, requires_grad=True) if bias else None
    labels, upstream = torch.randint(0, v, (k,)), torch.randn(k)
    leaves = [t for t in (hidden, weight, b) if t is not None]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for positions in (5, 64):
        values, squares = chunked_head.head_logps(hidden, weight, b, labels, squares=True, positions=positions)
        got = torch.autograd.grad((values * upstream).sum(), leaves)
        logits = F.linear(hidden, weight, b).float()
        lse = torch.logsumexp(logits, -1)
        want = logits.gather(-1, labels[:, None]).squeeze(-1) - lse
        expected = torch.autograd.grad((want * upstream).sum(), leaves)
        torch.testing.assert_close(values, want, **tol)
        torch.testing.assert_close(squares, torch.logsumexp(2 * logits, -1) - 2 * lse, **tol)
        assert not squares.requires_grad and values.dtype == torch.float32
        for a, e in zip(got, expected):
            assert a.dtype == e.dtype
            torch.testing.assert_close(a.float(), e.float(), **tol)


def test_wpo_squares_through_the_model_equal_full_logits():
    model = load_causal_lm("builtin:tiny-gpt2").eval()
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    with torch.no_grad():
        tokens = step.completion_tokens(model, batch, squares=True)
        logits = step.forward_logits(model, batch)[:, :-1][batch["completion_mask"][:, 1:].bool()].float()
    want = torch.logsumexp(2 * logits, -1) - 2 * torch.logsumexp(logits, -1)
    torch.testing.assert_close(tokens.log_sum_sq, want, rtol=1e-5, atol=1e-5)


def test_logits_changed_after_the_head_fall_back_to_the_models_own_head():
    model = SoftCapped(load_causal_lm("builtin:tiny-gpt2").eval())
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    sums, _ = step.sequence_logps(model, batch)
    assert step._HEAD[model] is False and step._COMPACT[model] is True
    torch.testing.assert_close(sums, full(model, batch)[0])
    torch.testing.assert_close(step.sequence_logps(model, batch)[0], sums)  # no second probe


def test_models_without_logits_to_keep_fall_back():
    model = NoKeep(load_causal_lm("builtin:tiny-gpt2"))
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    sums, _ = step.sequence_logps(model, batch)
    assert step.output_head(model) is None and step._COMPACT[model] is False
    torch.testing.assert_close(sums, full(model, batch)[0])
    torch.testing.assert_close(step.sequence_logps(model, batch)[0], sums)  # no second probe
