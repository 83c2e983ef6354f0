"""Per-sequence log-probabilities from a causal LM's logits.

Sequences are prompt + completion; only completion tokens count (the completion mask).
Summing over completion tokens (not averaging) matches TRL's DPOTrainer; objectives that
want length-normalised values divide by the token counts returned alongside.
"""
from __future__ import annotations

import torch
from torch import Tensor


def token_logps(logits: Tensor, input_ids: Tensor) -> Tensor:
    """logits: [N, T, V], input_ids: [N, T] -> [N, T-1] log p(x_t | x_<t) for t = 1..T-1.

    gather minus logsumexp instead of a full log_softmax: the [N, T, V] log-prob tensor
    is never materialised, which matters for 50k+ vocabularies.
    """
    shifted = logits[:, :-1, :].float()
    labels = input_ids[:, 1:].unsqueeze(-1)
    return shifted.gather(-1, labels).squeeze(-1) - torch.logsumexp(shifted, dim=-1)


def completion_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """-> (sum of completion-token log-probs [N], completion-token count [N])."""
    mask = completion_mask[:, 1:].to(logits.dtype if logits.is_floating_point() else torch.float32)
    per_token = token_logps(logits, input_ids) * mask
    return per_token.sum(-1), mask.sum(-1)


def exact_kl(ref_logits: Tensor, policy_logits: Tensor, completion_mask: Tensor) -> Tensor:
    """Per-sequence sum over completion tokens of the exact categorical KL(pi_ref || pi).

    ref_logits, policy_logits: [N, T, V]; completion_mask: [N, T] -> [N].
    At each position t the next-token distributions over the whole vocabulary are compared:
    KL_t = sum_v p_ref(v) (log p_ref(v) - log p(v)), the direction PMPO's regulariser uses
    (Abdolmaleki et al. 2024, eq. for J(pi); the expectation is under the reference).
    """
    ref = torch.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)
    pol = torch.log_softmax(policy_logits[:, :-1, :].float(), dim=-1)
    per_token = (ref.exp() * (ref - pol)).sum(-1)
    return (per_token * completion_mask[:, 1:].float()).sum(-1)
