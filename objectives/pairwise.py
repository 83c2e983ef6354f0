"""Paired preference objectives (work in progress)."""
from __future__ import annotations

import torch.nn.functional as F

from objectives.registry import register
from objectives.types import LossOutput, PairedLogps, detached_mean


@register("dpo", paired=True, needs_reference=True, hyperparameters=("beta", "label_smoothing"),
          metrics=("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                   "logps/chosen", "logps/rejected"))
def dpo(logps: PairedLogps, params) -> LossOutput:
    """DPO sigmoid loss."""
    chosen_rewards = params.beta * (logps.chosen - logps.ref_chosen)
    rejected_rewards = params.beta * (logps.rejected - logps.ref_rejected)
    logits = chosen_rewards - rejected_rewards
    eps = params.label_smoothing
    losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return LossOutput(losses, {
        "rewards/chosen": detached_mean(chosen_rewards),
        "rewards/rejected": detached_mean(rejected_rewards),
        "rewards/accuracies": detached_mean((chosen_rewards > rejected_rewards).float()),
        "rewards/margins": detached_mean(chosen_rewards - rejected_rewards),
        "logps/chosen": detached_mean(logps.chosen),
        "logps/rejected": detached_mean(logps.rejected),
    })
