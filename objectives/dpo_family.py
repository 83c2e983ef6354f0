"""What every loss type of TRL 1.16's DPOTrainer shares, as pure functions of per-sequence log-probs.

TRL (``trl/trainer/dpo_trainer.py``, ``_compute_loss``) computes, for a batch of B pairs:

1. the sequence log-probs, policy and reference; with LD-DPO (``ld_alpha``, Liu et al. 2024,
   "Length Desensitization in DPO") the tokens past the pair's shared length
   l_s = min(|y_w|, |y_l|) count ``ld_alpha`` times: log pi = shared + ld_alpha * tail;
2. the log-ratios r_w = log pi(y_w) - log pi_ref(y_w), r_l likewise;
3. for the margin losses, the f-DPO scores f'(pi/pi_ref) of the chosen f-divergence (Wang et al.
   2023, "Beyond Reverse KL"), written in the log-ratio r: reverse KL r, forward KL 1 - e^-r,
   Jensen-Shannon log 2 + log sigmoid(r), alpha-divergence (e^{(a-1) r} - 1) / (a - 1);
4. a per-pair loss per loss type, each multiplied (with ``use_weighting``) by WPO's weight
   (Zhou et al. 2024, Eq. 2) w = exp(mean_t log p(y_w,t) - log sum_v p(v)^2) * (same for y_l),
   the policy's length-normalised sequence probability under its own sharpened distribution,
   without gradient;
5. the reward metrics from beta * r_w and beta * r_l and the (LD-weighted) log-probs, the same
   for every loss type.

Here steps 1-3 are ``dpo_terms``, 4-5 ``dpo_output``; ``register_dpo`` registers a per-pair loss
with the hyperparameters and inputs these steps read. The per-pair losses themselves live in
``objectives.dpo_margin`` and ``objectives.dpo_ratios``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.registry import LENGTH_TAIL, WPO_WEIGHTS, When, register
from objectives.types import LossOutput, ObjectiveParams, PairedLogps, detached_mean

LN2 = math.log(2.0)

# TRL logs these for every DPO loss type and for CPO/SimPO/ORPO alike.
REWARD_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)

F_DIVERGENCE = ("f_divergence_type", "f_alpha_divergence_coef")
TR_DPO = ("sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps")
READ_WHEN = {
    "f_alpha_divergence_coef": When("f_divergence_type", lambda kind: kind == "alpha_divergence"),
    "ref_model_mixup_alpha": When("sync_ref_model", bool),
    "ref_model_sync_steps": When("sync_ref_model", bool),
}
# exp() of the alpha-divergence's scaled log-ratio, in float32, must stay finite after a cast
# back to the input dtype: float16 overflows past e^11.
_EXP_LIMIT = {torch.float16: 11.0}


def reward_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor, chosen_logps: Tensor,
                   rejected_logps: Tensor) -> dict[str, Tensor]:
    """TRL's per-batch metrics: means over the B pairs of the per-pair values.

    The accuracy is a strict ``>``: a tie (e.g. at step 0, when policy == reference and every
    reward is 0) counts as wrong, as in TRL.
    """
    return {
        "rewards/chosen": detached_mean(chosen_rewards),
        "rewards/rejected": detached_mean(rejected_rewards),
        "rewards/accuracies": detached_mean((chosen_rewards > rejected_rewards).float()),
        "rewards/margins": detached_mean(chosen_rewards - rejected_rewards),
        "logps/chosen": detached_mean(chosen_logps),
        "logps/rejected": detached_mean(rejected_logps),
    }


def length_average(total: Tensor, tokens: Tensor) -> Tensor:
    return total / tokens.to(total.dtype).clamp(min=1.0)


def conservative_sigmoid(logits: Tensor, label_smoothing: float) -> Tensor:
    """-log sigmoid(logits), with a label_smoothing share of the pairs assumed flipped (cDPO).

    Mitchell 2023, "A note on DPO with noisy preferences" (cDPO); the same expression as
    eric-mitchell/direct-preference-optimization ``dpo_loss`` and TRL's AOT and CPO losses.
    """
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def f_score(log_ratio: Tensor, params: ObjectiveParams) -> Tensor:
    """f'(pi/pi_ref) of the configured f-divergence, as a function of r = log(pi/pi_ref), [B] -> [B].

    Every form is 0 at r = 0, so the losses keep their value at the reference.
    """
    kind = params.f_divergence_type
    if kind == "reverse_kl":
        return log_ratio
    if kind == "forward_kl":
        return -torch.expm1(-log_ratio)
    if kind == "js_divergence":
        return LN2 + F.logsigmoid(log_ratio)
    if kind == "alpha_divergence":
        a = params.f_alpha_divergence_coef
        if abs(a - 1.0) < 1e-6:  # the limit a -> 1 is log t: reverse KL
            return log_ratio
        work = torch.promote_types(log_ratio.dtype, torch.float32)  # at least float32, as TRL, never less
        scaled = ((a - 1.0) * log_ratio).to(work).clamp(max=_EXP_LIMIT.get(log_ratio.dtype, 80.0))
        return torch.expm1(scaled).to(log_ratio.dtype) / (a - 1.0)
    raise ValueError(f"unknown f_divergence_type {kind!r}")


@dataclass
class DpoTerms:
    """The per-pair quantities DPOTrainer's loss types are built from, all [B].

    chosen, rejected: policy log-probs (LD-weighted when ld_alpha is set); ref_chosen,
    ref_rejected: the reference's, weighted alike; chosen_ratio, rejected_ratio: their
    differences r_w, r_l; chosen_score, rejected_score: f'(.) of those (= the ratios for
    reverse KL); chosen_tokens, rejected_tokens: completion lengths; raw: the inputs as given
    (SFT reads the unweighted sums).
    """

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_ratio: Tensor
    rejected_ratio: Tensor
    chosen_score: Tensor
    rejected_score: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    raw: PairedLogps

    @property
    def margin(self) -> Tensor:
        """Delta = f'(chosen) - f'(rejected): the score difference the margin losses compare."""
        return self.chosen_score - self.rejected_score


def _required(value: Tensor | None, what: str, name: str) -> Tensor:
    if value is None:
        raise ValueError(f"{name} needs {what}")
    return value


def _length_desensitized(total: Tensor, tail: Tensor | None, params: ObjectiveParams, name: str) -> Tensor:
    """LD-DPO: shared + ld_alpha * tail = total - (1 - ld_alpha) * tail (total when ld_alpha is None)."""
    if params.ld_alpha is None:
        return total
    return total - (1.0 - params.ld_alpha) * _required(tail, "the tail log-probs (ld_alpha)", name)


def dpo_terms(logps: PairedLogps, params: ObjectiveParams, name: str) -> DpoTerms:
    """Steps 1-3 of the module docstring; shapes [B] throughout."""
    ref_chosen = _required(logps.ref_chosen, "reference log-probs (ref_chosen, ref_rejected)", name)
    ref_rejected = _required(logps.ref_rejected, "reference log-probs (ref_chosen, ref_rejected)", name)
    chosen = _length_desensitized(logps.chosen, logps.chosen_tail, params, name)
    rejected = _length_desensitized(logps.rejected, logps.rejected_tail, params, name)
    ref_chosen = _length_desensitized(ref_chosen, logps.ref_chosen_tail, params, name)
    ref_rejected = _length_desensitized(ref_rejected, logps.ref_rejected_tail, params, name)
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    return DpoTerms(
        chosen=chosen, rejected=rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected,
        chosen_ratio=chosen_ratio, rejected_ratio=rejected_ratio,
        chosen_score=f_score(chosen_ratio, params), rejected_score=f_score(rejected_ratio, params),
        chosen_tokens=logps.chosen_tokens, rejected_tokens=logps.rejected_tokens, raw=logps,
    )


def wpo_weights(logps: PairedLogps, name: str) -> Tensor:
    """WPO's pair weight (Zhou et al. 2024, Eq. 2, as TRL 1.16), [B], no gradient:
    w_i = exp(chosen_wpo_i / |y_w,i|) * exp(rejected_wpo_i / |y_l,i|), each completion's mean over
    its tokens of log p(y_t) - log sum_v p(v)^2 (lengths clamped to at least 1)."""
    chosen = _required(logps.chosen_wpo, "the WPO log-probs (use_weighting)", name)
    rejected = _required(logps.rejected_wpo, "the WPO log-probs (use_weighting)", name)
    mean = length_average(chosen, logps.chosen_tokens) + length_average(rejected, logps.rejected_tokens)
    return torch.exp(mean).detach()


PerPair = Callable[[DpoTerms, ObjectiveParams], Tensor]


def dpo_output(logps: PairedLogps, params: ObjectiveParams, name: str, per_pair: PerPair,
               weighted: bool) -> LossOutput:
    """Steps 4-5 of the module docstring: per-pair losses [B] (times WPO's weights when
    `weighted`) and TRL's reward metrics."""
    terms = dpo_terms(logps, params, name)
    losses = per_pair(terms, params)
    if weighted:
        losses = losses * wpo_weights(logps, name)
    beta = params.beta
    metrics = reward_metrics(beta * terms.chosen_ratio, beta * terms.rejected_ratio, terms.chosen, terms.rejected)
    return LossOutput(losses, metrics)


def register_dpo(
    name: str,
    *,
    f_divergence: bool = True,
    weighting: bool = True,
    reads: tuple[str, ...] = (),
    at_reference: Callable[[ObjectiveParams], float] | None = None,
    check: Callable[[ObjectiveParams], list[tuple[str, str]]] | None = None,
) -> Callable[[PerPair], PerPair]:
    """Register a DPOTrainer loss type given as its per-pair loss ``(DpoTerms, params) -> [B]``.

    Every such objective reads beta, ld_alpha and TR-DPO's reference sync; `f_divergence`: it is
    built on the score margin, so it takes an f-divergence (TRL allows one for exactly these);
    `weighting`: it takes WPO weights (TRL refuses them for AOT, whose sorting breaks the pairs);
    `reads`: its own extra hyperparameters. The registered function is
    ``(PairedLogps, params) -> LossOutput``; the decorator returns the per-pair loss unchanged.
    """
    hyperparameters = ("beta", *reads, *(F_DIVERGENCE if f_divergence else ()),
                       *(("use_weighting",) if weighting else ()), "ld_alpha", *TR_DPO)
    inputs = {LENGTH_TAIL: lambda p: p.ld_alpha is not None}
    if weighting:
        inputs[WPO_WEIGHTS] = lambda p: bool(p.use_weighting)

    def decorate(per_pair: PerPair) -> PerPair:
        def loss(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
            return dpo_output(logps, params, name, per_pair, weighting and bool(params.use_weighting))

        loss.__doc__, loss.__name__ = per_pair.__doc__, per_pair.__name__
        register(
            name, paired=True, needs_reference=True, hyperparameters=hyperparameters, metrics=REWARD_METRICS,
            read_when={k: w for k, w in READ_WHEN.items() if k in hyperparameters}, extra_inputs=inputs,
            at_reference=at_reference, check=check,
        )(loss)
        return per_pair

    return decorate
