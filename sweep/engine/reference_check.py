"""The step-0 check: before the first optimizer step the policy equals its reference, so every
log-ratio is 0 and a DPO-family loss has a known value (ln 2 for the sigmoid losses; the registry
knows each one's, `Objective.loss_at_reference`). A first batch that gives anything else means
the reference log-probs are not the policy's on the same rows: tokenization, padding, a cache
entry for other rows or another model (open-instruct checks its cached DPO this way). The run
then fails at once, saying what it compared, instead of training against a wrong reference.

The check runs one extra forward of the first batch in eval mode (no dropout: with dropout the
policy is not the reference even at step 0), without gradient. It applies only where the policy
starts as the reference: no checkpoint to resume and no separate `model.ref_name_or_path`.
"""
from __future__ import annotations

import math

import torch

from objectives.registry import Objective
from sweep.config.schema import PrefsweepConfig
from sweep.engine.batch_loss import batch_loss
from sweep.engine.precision import autocast_context
from sweep.engine.reference import Reference

# |loss - expected| allowed: float32 sums agree to ~1e-6 whatever the batching; under bf16/fp16
# autocast the cache pass and the step batch rows differently, which moves sequence sums by up
# to a few tenths of a nat on long completions.
TOLERANCE = {"float32": 1e-3, "autocast": 5e-2}


class ReferenceMismatchError(RuntimeError):
    """The first batch's loss is not the loss at the reference: reference and policy disagree."""


def applies(cfg: PrefsweepConfig, resuming: bool) -> bool:
    ref = cfg.model.ref_name_or_path
    return not resuming and (ref is None or ref == cfg.model.name_or_path)


def check_first_batch(policy, reference: Reference | None, batch, objective: Objective, cfg: PrefsweepConfig,
                      device) -> None:
    """Raise ReferenceMismatchError when the first batch's loss is not the objective's loss at the reference."""
    expected = objective.loss_at_reference(cfg.objective)
    if expected is None or reference is None:
        return
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad(), autocast_context(cfg, device):
            out = batch_loss(policy, reference, batch, objective, cfg.objective)
    finally:
        policy.train(was_training)
    loss = out.loss.item()
    # bf16 weights, or bf16/fp16 autocast on CUDA (sweep.engine.precision)
    reduced = cfg.model.dtype in ("bfloat16", "float16") or (device.type == "cuda" and cfg.model.dtype == "auto")
    tolerance = TOLERANCE["autocast" if reduced else "float32"]
    if math.isfinite(loss) and abs(loss - expected) <= tolerance:
        return
    source = "the study's cached reference log-probs" if reference.cached is not None else "the live reference model"
    named = " (ln 2)" if math.isclose(expected, math.log(2.0)) else ""
    margins = float(out.metrics["rewards/margins"]) if "rewards/margins" in out.metrics else float("nan")
    raise ReferenceMismatchError(
        f"step-0 check failed: the policy starts as its reference ({cfg.model.name_or_path}), so every log-ratio "
        f"is 0 and the {objective.name} loss of the first batch must be {expected:.6f}{named}; it is {loss:.6f} "
        f"(|difference| {abs(loss - expected):.2e} > {tolerance:g}; rewards/margins {margins:.4g}, expected 0). "
        f"The reference log-probs from {source} are not the policy's on the same rows: tokenization, padding or "
        "a cache entry for other rows or another model."
    )
