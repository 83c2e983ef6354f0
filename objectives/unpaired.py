"""Unpaired preference objectives: each row is one completion labelled accepted or rejected.

Each objective is a pure function of per-sequence log-probs::

    fn(logps: UnpairedLogps, params: ObjectiveParams) -> LossOutput

All inputs are ``[B]`` tensors (B = rows, accepted and rejected mixed in any order);
``LossOutput.losses`` is ``[B]`` in the same row order and its mean is the batch loss.

Metrics over one label set (``rewards/chosen``, ``logps/accepted``...) are the mean over that
set's rows. When a batch has no row of a set, the metrics of that set (and the margins, which
need both) are NaN, never left out: every batch, and every DDP rank, then reports the same
names, which ``sweep.engine.metrics.MetricAccumulator`` all-reduces as one vector, skipping the
NaNs. The effect is TRL's KTO trainer's, which logs nothing for a set absent from a batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from objectives.dpo_family import READ_WHEN, TR_DPO
from objectives.registry import EXACT_KL, MISMATCHED_KL, register
from objectives.types import LossOutput, ObjectiveParams, UnpairedLogps, detached_mean

# exp() of a summed sequence log-ratio overflows float32 beyond ~88; 20 keeps r - 1 - log r
# below 5e8, far past any log-ratio a KL-regularised run should reach.
MAX_LOG_RATIO = 20.0


def _per_set_means(values: Tensor, accepted: Tensor) -> tuple[Tensor, Tensor]:
    """Detached means of ``values`` over the accepted rows and over the rejected rows (NaN if empty)."""
    return detached_mean(values[accepted]), detached_mean(values[~accepted])


@register(
    "kto",
    paired=False,
    needs_reference=True,
    hyperparameters=("beta", "desirable_weight", "undesirable_weight", *TR_DPO),
    read_when={name: READ_WHEN[name] for name in TR_DPO if name in READ_WHEN},
    metrics=("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"),
    extra_inputs=frozenset({MISMATCHED_KL}),
)
def kto(logps: UnpairedLogps, params: ObjectiveParams) -> LossOutput:
    """KTO (Ethayarajh et al. 2024, Eq. 7) with the batch KL baseline from mismatched pairs.

    Shapes: logps, ref_logps, accepted, kl_logps, ref_kl_logps are [B]; returns losses [B].
    With r_i = logps_i - ref_logps_i and z = max(0, mean_j(kl_logps_j - ref_kl_logps_j)):
      accepted row: desirable_weight   * (1 - sigmoid(beta * (r_i - z)))
      rejected row: undesirable_weight * (1 - sigmoid(beta * (z - r_i)))

    As TRL 1.16 ``trl/trainer/kto_trainer.py`` (loss_type="kto", ``_compute_loss``): z is the
    reference point, estimated from prompt i paired with completion i-1 (so it is not the
    rows' own log-ratios), clamped at 0 as a KL must be, and detached so the policy cannot
    lower its loss by moving the baseline. TRL also averages z over data-parallel ranks before
    clamping; a pure function sees one rank's batch, so z here is the per-rank estimate.
    The batch loss is the mean over all rows, as TRL's ``nanmean`` over its concatenation.

    Metrics as TRL logs them: ``kl`` = z; ``rewards/chosen`` = mean over accepted rows of
    beta*r_i, ``logps/chosen`` = mean over accepted rows of logps_i (likewise ``*/rejected``);
    ``rewards/margins`` = rewards/chosen - rewards/rejected. TRL's KTO reports no
    ``rewards/accuracies`` (there are no pairs to compare). A set absent from the batch makes
    its metrics (and the margins) NaN, see the module docstring. TR-DPO's reference sync
    (``sync_ref_model``) applies as in TRL's KTOConfig; the engine moves the reference.
    """
    if logps.ref_logps is None:
        raise ValueError("kto needs reference log-probs (ref_logps)")
    if logps.kl_logps is None or logps.ref_kl_logps is None:
        raise ValueError("kto needs the mismatched-pair log-probs (kl_logps, ref_kl_logps)")
    accepted = logps.accepted.bool()
    kl = (logps.kl_logps - logps.ref_kl_logps).mean().clamp(min=0).detach()
    logratios = logps.logps - logps.ref_logps
    losses = torch.where(
        accepted,
        params.desirable_weight * (1.0 - torch.sigmoid(params.beta * (logratios - kl))),
        params.undesirable_weight * (1.0 - torch.sigmoid(params.beta * (kl - logratios))),
    )

    chosen_reward, rejected_reward = _per_set_means(params.beta * logratios, accepted)
    chosen_logps, rejected_logps = _per_set_means(logps.logps, accepted)
    metrics = {
        "kl": kl.float(),
        "rewards/chosen": chosen_reward,
        "rewards/rejected": rejected_reward,
        "rewards/margins": chosen_reward - rejected_reward,
        "logps/chosen": chosen_logps,
        "logps/rejected": rejected_logps,
    }
    return LossOutput(losses, metrics)


def _pmpo_kl_rows(logps: UnpairedLogps, params: ObjectiveParams) -> Tensor | None:
    """Per-row estimate of KL(pi_ref || pi), [B]; None when its inputs were not computed."""
    if params.kl_estimator == "exact":
        return logps.exact_kl
    if logps.ref_logps is None:
        return None
    # Schulman's k3 estimator of KL(q || p) with q = pi_ref, p = pi and r = p/q
    # (http://joschu.net/blog/kl-approx.html): (r - 1) - log r is >= 0 for every row, unlike
    # the plain -log r. It is unbiased for completions drawn from pi_ref; dataset completions
    # make it an approximation, the price of working from cached reference log-probs. Only the
    # upper side needs a clamp: for very negative log r, exp(log r) just underflows to 0.
    log_ratio = (logps.logps - logps.ref_logps).clamp(max=MAX_LOG_RATIO)
    return torch.expm1(log_ratio) - log_ratio


@register(
    "pmpo",
    paired=False,
    needs_reference=True,
    hyperparameters=("alpha", "beta", "kl_estimator", "ema_tau"),
    metrics=("logps/accepted", "logps/rejected", "logps/margins", "kl"),
    extra_inputs={EXACT_KL: lambda params: params.kl_estimator == "exact"},  # read only by the exact estimator
    zero_beta_ok=True,
    check=lambda params: [("ema_tau", "moves a reference that beta 0 never reads; set beta > 0 or ema_tau null")]
    if params.ema_tau is not None and params.beta == 0 else [],
)
def pmpo(logps: UnpairedLogps, params: ObjectiveParams) -> LossOutput:
    """PMPO (Abdolmaleki et al. 2024, "Preference Optimization as Probabilistic Inference").

    Shapes: logps, accepted and ref_logps / exact_kl are [B]; returns losses [B].
    Maximises J = alpha * E_accept[log pi(y|x)] - (1 - alpha) * E_reject[log pi(y|x)]
                  - beta * KL(pi_ref || pi),
    log pi(y|x) the summed completion log-prob, each expectation the mean over *that set's* rows
    (an empty set contributes 0), the KL the mean over all rows. Row i's loss is its share of -J
    scaled by B / n_set, so ``losses.mean()`` is exactly -J however unbalanced the labels are.
    Not in TRL; this is the paper's objective.

    The seed project this replaces averaged a single cross-entropy over the whole batch, so an
    accepted row's weight depended on how many rejected rows shared its batch, and it penalised
    KL(pi || pi_ref). Both are wrong for PMPO: the paper weighs each set by its own expectation,
    and its regulariser is KL(pi_ref || pi). That direction is mass-covering: it penalises the
    policy for dropping any completion the reference produces, which is what keeps the
    rejected term (push log pi down, unbounded) from collapsing the policy.

    The KL term, per ``params.kl_estimator``:
      ``exact``:  ``logps.exact_kl``, per sequence the sum over completion tokens of the
                  categorical KL(pi_ref || pi) over the vocabulary, computed by the worker with
                  gradient through the policy. The registry entry is static, so it always lists
                  EXACT_KL; the worker computes it only when kl_estimator == "exact".
      ``sample``: Schulman's k3 estimate from ref_logps (see ``_pmpo_kl_rows``); works from
                  cached reference log-probs.
    ``ema_tau`` (the PMPO seed's moving reference): after every optimizer step the reference
    becomes (1 - ema_tau) * reference + ema_tau * policy, so the KL holds the policy near its own
    recent past instead of the initial model; the engine moves it, the loss is unchanged.
    With beta == 0 there is no KL term: the worker may then skip the reference model entirely
    (ref_logps / exact_kl None) and the ``kl`` metric is NaN; when they are given anyway,
    ``kl`` is still reported.

    Metrics: ``logps/accepted`` / ``logps/rejected``, means of the summed log-probs over each set
    (NaN when the set is empty), ``logps/margins`` their difference, and ``kl``, the mean KL estimate. No ``rewards/*``: PMPO has
    no implicit reward.
    """
    accepted = logps.accepted.bool()
    batch = accepted.numel()
    dtype = logps.logps.dtype
    n_accepted = accepted.sum().to(dtype).clamp(min=1.0)
    n_rejected = (~accepted).sum().to(dtype).clamp(min=1.0)
    # B / n_set turns the batch mean of the row losses into per-set expectations; the clamp only
    # matters for an empty set, whose (absent) rows then contribute nothing.
    row_weights = torch.where(
        accepted, -params.alpha * batch / n_accepted, (1.0 - params.alpha) * batch / n_rejected
    )
    losses = row_weights * logps.logps

    kl_rows = _pmpo_kl_rows(logps, params)
    if params.beta > 0:
        if kl_rows is None:
            needed = "exact_kl" if params.kl_estimator == "exact" else "ref_logps"
            raise ValueError(f"pmpo with beta > 0 and kl_estimator={params.kl_estimator!r} needs {needed}")
        losses = losses + params.beta * kl_rows

    accepted_logps, rejected_logps = _per_set_means(logps.logps, accepted)
    metrics = {
        "logps/accepted": accepted_logps,
        "logps/rejected": rejected_logps,
        # Unlike eval/loss, which scales with alpha, this can rank trials of an alpha sweep.
        "logps/margins": accepted_logps - rejected_logps,
        "kl": detached_mean(kl_rows) if kl_rows is not None else torch.tensor(float("nan")),
    }
    return LossOutput(losses, metrics)
