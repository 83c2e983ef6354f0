"""Inputs and outputs of the preference objectives.

Every objective is a pure function ``fn(logps, params) -> LossOutput`` over per-sequence
log-probabilities; models, tokenizers and trainers never reach it. ``params`` is any
object with the hyperparameters of ``ObjectiveParams`` (the app passes the ``objective``
section of its config); the losses import nothing else of the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class ObjectiveParams(Protocol):
    """The hyperparameters objectives read; each reads only those its registry entry lists."""

    beta: float
    alpha: float
    label_smoothing: float
    gamma: float
    kl_estimator: str
    desirable_weight: float
    undesirable_weight: float
    f_divergence_type: str
    f_alpha_divergence_coef: float
    use_weighting: bool
    ld_alpha: float | None
    discopop_tau: float
    gamma_beta_ratio: float | None
    sync_ref_model: bool
    ref_model_mixup_alpha: float
    ref_model_sync_steps: int
    ema_tau: float | None


@dataclass
class PairedLogps:
    """Per-sequence log-probs of a batch of B preference pairs.

    chosen, rejected: [B] completion log-probs summed over completion tokens (policy).
    chosen_tokens, rejected_tokens: [B] number of completion tokens (for length-normalised
        objectives such as IPO, SimPO, ORPO).
    ref_chosen, ref_rejected: [B] the same sums under the reference model, or None for
        reference-free objectives.
    chosen_tail, rejected_tail, ref_chosen_tail, ref_rejected_tail: [B] the part of those sums
        over the completion tokens past the pair's shared length min(|y_w|, |y_l|) (LD-DPO's
        "verbose" tokens); None unless an objective asks for LENGTH_TAIL.
    chosen_wpo, rejected_wpo: [B] sum over completion tokens of log p(y_t) - log sum_v p(v)^2
        under the policy, without gradient (WPO's aligned log-probs); None unless an objective
        asks for WPO_WEIGHTS.
    """

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_tail: Tensor | None = None
    rejected_tail: Tensor | None = None
    ref_chosen_tail: Tensor | None = None
    ref_rejected_tail: Tensor | None = None
    chosen_wpo: Tensor | None = None
    rejected_wpo: Tensor | None = None


@dataclass
class UnpairedLogps:
    """Per-sequence log-probs of a batch of B labelled completions (accept/reject).

    logps: [B] completion log-probs summed over completion tokens (policy).
    tokens: [B] number of completion tokens.
    accepted: [B] bool, True where the row is an accepted (desirable) completion.
    ref_logps: [B] reference log-probs, or None.
    kl_logps, ref_kl_logps: [B] policy / reference log-probs of mismatched pairs
        (prompt i with completion i-1), the batch KL baseline of KTO; None when unused.
    exact_kl: [B] per-sequence sum over completion tokens of the exact categorical
        KL(pi_ref || pi) over the vocabulary (PMPO, kl_estimator=exact); None when unused.
    """

    logps: Tensor
    tokens: Tensor
    accepted: Tensor
    ref_logps: Tensor | None = None
    kl_logps: Tensor | None = None
    ref_kl_logps: Tensor | None = None
    exact_kl: Tensor | None = None


@dataclass
class LossOutput:
    """losses: [B] per-example losses whose mean is the batch objective to minimise.
    metrics: scalar tensors named as TRL names them (``rewards/chosen``, ``logps/chosen``...),
    already reduced over the batch and detached."""

    losses: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()


def detached_mean(x: Tensor) -> Tensor:
    return x.detach().float().mean() if x.numel() else torch.tensor(float("nan"))
