"""Unpaired preference objectives (work in progress)."""
from __future__ import annotations

import torch

from objectives.registry import EXACT_KL, MISMATCHED_KL, register
from objectives.types import LossOutput, UnpairedLogps, detached_mean


@register("kto", paired=False, needs_reference=True,
          hyperparameters=("beta", "desirable_weight", "undesirable_weight"),
          metrics=("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "kl"),
          extra_inputs=frozenset({MISMATCHED_KL}))
def kto(logps: UnpairedLogps, params) -> LossOutput:
    """KTO (stub)."""
    kl = (logps.kl_logps - logps.ref_kl_logps).mean().clamp(min=0).detach()
    r = logps.logps - logps.ref_logps
    acc = logps.accepted
    losses = torch.where(acc, params.desirable_weight * (1 - torch.sigmoid(params.beta * (r - kl))),
                         params.undesirable_weight * (1 - torch.sigmoid(params.beta * (kl - r))))
    return LossOutput(losses, {"kl": kl})


@register("pmpo", paired=False, needs_reference=True,
          hyperparameters=("beta", "alpha", "kl_estimator"),
          metrics=("logps/accepted", "logps/rejected", "kl"),
          extra_inputs=frozenset({EXACT_KL}))
def pmpo(logps: UnpairedLogps, params) -> LossOutput:
    """PMPO (stub)."""
    acc = logps.accepted.float()
    b = acc.numel()
    n_a, n_r = acc.sum().clamp(min=1), (1 - acc).sum().clamp(min=1)
    losses = -params.alpha * acc * logps.logps * b / n_a + (1 - params.alpha) * (1 - acc) * logps.logps * b / n_r
    return LossOutput(losses, {"kl": detached_mean(torch.zeros(1))})
