"""Per-sequence completion log-probs of a model over a collated batch."""
from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from objectives.logprobs import completion_logps


def forward_logits(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
    return model(
        input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"], use_cache=False
    ).logits


# Models seen to accept a boolean `logits_to_keep` (True) or not (False), so the probe and
# its fallback happen once per model, not per step.
_COMPACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sequence_logps(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> tuple[Tensor, Tensor]:
    """-> (sum of completion-token log-probs [N], completion-token counts [N]), as
    `completion_logps(forward_logits(...))` computes them, but only the positions that
    predict a completion token go through the LM head and the log-softmax (HF's boolean
    `logits_to_keep`): prompt and pad positions never reach the vocabulary matmul, which
    for small models and long prompts is a large share of the step. Models that do not take
    a boolean `logits_to_keep` get the full-logits path."""
    input_ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"]
    if _COMPACT.get(model, True):
        keep = torch.zeros_like(mask, dtype=torch.bool)
        keep[:, :-1] = mask[:, 1:].bool()  # position t predicts token t+1
        probing = model not in _COMPACT
        try:
            logits = model(input_ids=input_ids, attention_mask=batch[f"{prefix}attention_mask"], use_cache=False,
                           logits_to_keep=keep).logits
            fits = logits.dim() == 2 and logits.shape[0] == int(keep.sum())
        except (TypeError, ValueError, IndexError, RuntimeError):
            if not probing:
                raise
            fits = False
        if probing:
            _COMPACT[model] = fits
        if fits:
            logits = logits.float()
            labels = input_ids[:, 1:][keep[:, :-1]]  # row-major, the order boolean indexing keeps
            per_token = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            rows = keep.nonzero()[:, 0]
            sums = per_token.new_zeros(input_ids.shape[0]).index_add(0, rows, per_token)
            return sums, mask[:, 1:].sum(-1).to(sums.dtype)
    logits = forward_logits(model, batch, prefix)
    return completion_logps(logits, input_ids, mask)
