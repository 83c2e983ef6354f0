"""The loss of one collated batch: the policy's and reference's log-probs, then the objective.

Shared by the worker loop, evaluation, the reference-cache pass and the benchmarks, so the
numbers they report come from the same code.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from objectives.logprobs import completion_logps, exact_kl
from objectives.registry import EXACT_KL, LENGTH_TAIL, MISMATCHED_KL, WPO_WEIGHTS, Objective
from objectives.types import LossOutput, PairedLogps, UnpairedLogps
from sweep.engine.reference import Reference
from sweep.engine.sequence_logps import TokenLogps, completion_tokens, forward_logits, sequence_logps


def _tails(tokens: TokenLogps) -> Tensor:
    """[2B] log-prob sums over the tokens past each pair's shared length min(|y_w|, |y_l|) (LD-DPO);
    rows are B chosen then B rejected."""
    half = tokens.counts.shape[0] // 2
    shared = torch.minimum(tokens.counts[:half], tokens.counts[half:]).repeat(2)
    return tokens.sums(where=tokens.positions > shared[tokens.rows])


def pair_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
              objective: Objective, params) -> LossOutput:
    """batch rows: B chosen then B rejected (see sweep.engine.collate.PairCollator)."""
    inputs = objective.inputs(params)
    tokens = completion_tokens(policy, batch, squares=WPO_WEIGHTS in inputs)
    sums = tokens.sums()
    split = lambda rows: (None, None) if rows is None else rows.chunk(2)  # noqa: E731
    logps = PairedLogps(*split(sums), *split(tokens.counts))
    if objective.needs_reference and reference is not None:
        if LENGTH_TAIL in inputs:  # per-token, so from a live model (the registry keeps the cache off)
            ref_tokens = reference.tokens(batch)
            logps.ref_chosen, logps.ref_rejected = split(ref_tokens.sums())
            logps.ref_chosen_tail, logps.ref_rejected_tail = split(_tails(ref_tokens))
        else:
            logps.ref_chosen, logps.ref_rejected = split(reference.logps(batch))
    if LENGTH_TAIL in inputs:
        logps.chosen_tail, logps.rejected_tail = split(_tails(tokens))
    if WPO_WEIGHTS in inputs:
        logps.chosen_wpo, logps.rejected_wpo = split(tokens.sums(tokens.values.detach() - tokens.log_sum_sq))
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
