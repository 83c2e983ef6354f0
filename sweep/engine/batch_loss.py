"""The loss of one collated batch: the policy's and reference's log-probs, then the objective.

Shared by the worker loop, evaluation, the reference-cache pass and the benchmarks, so the
numbers they report come from the same code.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from objectives.logprobs import completion_logps, exact_kl
from objectives.registry import EXACT_KL, MISMATCHED_KL, Objective
from objectives.types import LossOutput, PairedLogps, UnpairedLogps
from sweep.engine.reference import Reference
from sweep.engine.sequence_logps import forward_logits, sequence_logps


def pair_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
              objective: Objective, params) -> LossOutput:
    """batch rows: B chosen then B rejected (see sweep.engine.collate.PairCollator)."""
    sums, counts = sequence_logps(policy, batch)
    half = sums.shape[0] // 2
    ref = reference.logps(batch) if objective.needs_reference and reference is not None else None
    logps = PairedLogps(
        chosen=sums[:half], rejected=sums[half:], chosen_tokens=counts[:half], rejected_tokens=counts[half:],
        ref_chosen=None if ref is None else ref[:half], ref_rejected=None if ref is None else ref[half:],
    )
    return objective.fn(logps, params)


def unpaired_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
                  objective: Objective, params) -> LossOutput:
    inputs = objective.inputs(params)
    wants_exact = objective.needs_reference and reference is not None and EXACT_KL in inputs
    if wants_exact:  # the exact KL compares full next-token distributions: every position's logits
        logits = forward_logits(policy, batch)
        sums, counts = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    else:
        sums, counts = sequence_logps(policy, batch)
    logps = UnpairedLogps(logps=sums, tokens=counts, accepted=batch["accepted"])
    if objective.needs_reference and reference is not None:
        if wants_exact:
            ref_logits = reference.logits(batch)
            logps.exact_kl = exact_kl(ref_logits, logits, batch["completion_mask"])
            logps.ref_logps = completion_logps(ref_logits, batch["input_ids"], batch["completion_mask"])[0]
        else:
            logps.ref_logps = reference.logps(batch)
        if MISMATCHED_KL in inputs:
            with torch.no_grad():
                logps.kl_logps = sequence_logps(policy, batch, "kl_")[0]
            logps.ref_kl_logps = reference.logps(batch, "kl_")
    return objective.fn(logps, params)


def batch_loss(policy, reference, batch, objective: Objective, params) -> LossOutput:
    fn = pair_loss if objective.paired else unpaired_loss
    return fn(policy, reference, batch, objective, params)
