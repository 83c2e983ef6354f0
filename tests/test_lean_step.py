"""sweep.engine.batch_loss.sequence_logps: log-probs from the completion positions' logits only
equal the full-logits computation, values and gradients; models without a boolean
`logits_to_keep` fall back to full logits."""
from __future__ import annotations

import torch
from torch import nn

from objectives.logprobs import completion_logps
from sweep.data.tokenize import TokenizedPair
from sweep.engine import sequence_logps as step
from sweep.engine.collate import PairCollator
from sweep.models.loading import load_causal_lm

ITEMS = [TokenizedPair([5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]), TokenizedPair([20], [21, 22, 23, 24, 25], [26]),
         TokenizedPair([30, 31, 32], [33], [34, 35])]


class NoKeep(nn.Module):
    """A causal LM whose forward takes no `logits_to_keep` (older or remote-code models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def full(model, batch):
    logits = step.forward_logits(model, batch)
    return completion_logps(logits, batch["input_ids"], batch["completion_mask"])


def test_compact_equals_full_logits_and_gradients():
    torch.manual_seed(0)
    model = load_causal_lm("builtin:tiny-gpt2").train()
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    sums, counts = step.sequence_logps(model, batch)
    assert step._COMPACT[model] is True  # GPT-2 takes the boolean mask
    (sums * torch.arange(1.0, 7.0)).sum().backward()
    compact_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref_sums, ref_counts = full(model, batch)
    (ref_sums * torch.arange(1.0, 7.0)).sum().backward()
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-4)
    assert counts.tolist() == ref_counts.tolist() == [2, 5, 1, 4, 1, 2]
    for got, want in zip(compact_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_models_without_logits_to_keep_fall_back():
    model = NoKeep(load_causal_lm("builtin:tiny-gpt2"))
    batch = PairCollator(1)(list(enumerate(ITEMS)))
    sums, _ = step.sequence_logps(model, batch)
    assert step._COMPACT[model] is False
    torch.testing.assert_close(sums, full(model, batch)[0])
    torch.testing.assert_close(step.sequence_logps(model, batch)[0], sums)  # no second probe
