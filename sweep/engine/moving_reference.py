"""A reference model that moves during training: TR-DPO's periodic sync (Gorbatovski et al. 2024,
"Learn Your Reference Model for Real Good Alignment"; TRL's `sync_ref_model`) and PMPO's EMA
reference (`ema_tau`). The registry says whether and how it moves
(`Objective.moving_reference`); this module moves it.

After every `every`-th optimizer step, reference <- (1 - alpha) * reference + alpha * policy,
parameter by parameter, as TRL's SyncRefModelCallback does at `on_step_end` (alpha = 1 is a hard
sync, every = 1 an EMA). Every DDP rank holds its own copy and updates it from the same
all-reduced policy, so the copies stay equal without communication. The reference's weights go
into each checkpoint's training state, so a resumed run continues from the reference it had,
not from the initial model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from objectives.registry import MovingReference as Plan
from objectives.registry import Objective
from sweep.engine.reference import Reference

STATE_KEY = "moving_reference"  # in the checkpoint's training state (sweep.engine.checkpoints)


class MovingReference:
    def __init__(self, plan: Plan, reference: nn.Module, policy: nn.Module):
        self.plan, self.reference, self.policy = plan, reference, policy
        mine = {name: p.shape for name, p in reference.named_parameters()}
        theirs = {name: p.shape for name, p in _unwrap(policy).named_parameters()}
        if mine != theirs:
            differ = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
            raise ValueError(f"the reference moves ({plan.why}) by mixing in the policy's weights, so both need the "
                             f"same parameters; they differ in {', '.join(name for name, _ in differ)}")

    @torch.no_grad()
    def after_step(self, step: int) -> bool:
        """Called after optimizer step `step` (1-based); -> whether the reference moved."""
        if step % self.plan.every:
            return False
        alpha = self.plan.alpha
        for target, source in zip(self.reference.parameters(), _unwrap(self.policy).parameters()):
            target.mul_(1.0 - alpha).add_(source.detach().to(target.dtype), alpha=alpha)
        return True

    def state(self) -> dict[str, Any]:
        return {name: tensor.detach().cpu() for name, tensor in self.reference.state_dict().items()}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            raise ValueError(f"the checkpoint has no reference weights, but this run's reference moves ({self.plan.why})")
        self.reference.load_state_dict(state)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP


def attach(objective: Objective, params, policy: nn.Module, reference: Reference | None,
           resumed_state: dict[str, Any] | None, resuming: bool) -> MovingReference | None:
    """The run's moving reference, or None when it is frozen. `resumed_state`: the reference
    weights a checkpoint kept (`resuming`: a checkpoint is being resumed)."""
    plan = objective.moving_reference(params)
    if plan is None:
        return None
    if reference is None or reference.model is None or reference.cached is not None:
        raise RuntimeError(f"the reference moves ({plan.why}) but this run has no reference model of its own to move")
    moving = MovingReference(plan, reference.model, policy)
    if resuming:
        moving.restore(resumed_state)
    return moving
