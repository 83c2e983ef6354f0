"""DPOTrainer loss types built on each completion's own log-ratio, on sorted margins (AOT), or on
the chosen completion's likelihood alone (SFT).

Each is one pure per-pair function ``(DpoTerms, params) -> losses [B]`` over the [B] tensors of
``objectives.dpo_family.DpoTerms`` (r_w = ``chosen_ratio``, r_l = ``rejected_ratio``, both
LD-weighted when ld_alpha is set); ``register_dpo`` adds LD-DPO, WPO weighting and TRL's reward
metrics. None but ``sft`` takes an f-divergence (TRL 1.16 refuses them: there is no
chosen-rejected difference for the partition term to cancel in).

Definitions follow TRL 1.16 ``trl/trainer/dpo_trainer.py`` (``_compute_loss``), named at each.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.dpo_family import LN2, DpoTerms, conservative_sigmoid, register_dpo
from objectives.types import ObjectiveParams


@register_dpo("nca_pair", f_divergence=False, at_reference=lambda p: 2.0 * LN2)
def nca_pair(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """NCA (Chen et al. 2024, "Noise Contrastive Alignment"), pairwise form, TRL's "nca_pair".

    With rewards c = beta*r_w, d = beta*r_l:
    loss_i = -log sigmoid(c) - 0.5 log sigmoid(-c) - 0.5 log sigmoid(-d): the chosen completion's
    absolute likelihood is raised, not only its margin over the rejected one.
    """
    chosen, rejected = params.beta * t.chosen_ratio, params.beta * t.rejected_ratio
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


@register_dpo("bco_pair", f_divergence=False, at_reference=lambda p: 2.0 * LN2)
def bco_pair(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """BCO (Jung et al. 2024, "Binary Classifier Optimization"), pairwise form, TRL's "bco_pair".

    loss_i = -log sigmoid(beta*r_w) - log sigmoid(-beta*r_l): each completion classified on its
    own reward. TRL 1.16 uses no reward shift here: the running mean of the rewards
    (``RunningMoments``) that earlier TRL releases subtracted is gone from its DPOTrainer (BCO's
    own trainer keeps one), so this is the unshifted classifier loss.
    """
    return -F.logsigmoid(params.beta * t.chosen_ratio) - F.logsigmoid(-params.beta * t.rejected_ratio)


@register_dpo("sppo_hard", f_divergence=False, at_reference=lambda p: 0.5 / p.beta**2)
def sppo_hard(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """SPPO (Wu et al. 2024, "Self-Play Preference Optimization", Eq. 4.7) with hard win
    probabilities (1 for the chosen, 0 for the rejected), TRL's "sppo_hard".

    loss_i = (r_w - 1/(2 beta))^2 + (r_l + 1/(2 beta))^2: each log-ratio regressed onto its target.
    """
    target = 0.5 / params.beta
    return (t.chosen_ratio - target) ** 2 + (t.rejected_ratio + target) ** 2


@register_dpo("aot", f_divergence=False, weighting=False, reads=("label_smoothing",), at_reference=lambda p: LN2)
def aot(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport"), TRL's "aot".

    The policy's margins m_i = log pi(y_w,i) - log pi(y_l,i) and the reference's m_ref,i are each
    sorted over the batch; with delta_k = sort(m)_k - sort(m_ref)_k,
    loss_k = -(1-ls) log sigmoid(beta*delta_k) - ls log sigmoid(-beta*delta_k). Row k of the
    result is the k-th smallest, not pair k: only the mean means anything (and per-pair WPO
    weights cannot apply, so TRL refuses them).
    """
    policy = torch.sort(t.chosen - t.rejected, dim=0).values
    reference = torch.sort(t.ref_chosen - t.ref_rejected, dim=0).values
    return conservative_sigmoid(params.beta * (policy - reference), params.label_smoothing)


@register_dpo("aot_unpaired", f_divergence=False, weighting=False, reads=("label_smoothing",),
              at_reference=lambda p: LN2)
def aot_unpaired(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """AOT, unpaired (Melnyk et al. 2024), TRL's "aot_unpaired".

    The chosen log-ratios r_w and the rejected r_l are sorted separately over the batch; with
    delta_k = sort(r_w)_k - sort(r_l)_k, loss_k = -(1-ls) log sigmoid(beta*delta_k)
    - ls log sigmoid(-beta*delta_k): the chosen rewards' distribution should dominate the rejected.
    """
    delta = torch.sort(t.chosen_ratio, dim=0).values - torch.sort(t.rejected_ratio, dim=0).values
    return conservative_sigmoid(params.beta * delta, params.label_smoothing)


@register_dpo("apo_zero", f_divergence=False, at_reference=lambda p: 1.0)
def apo_zero(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", Eq. 7), TRL's "apo_zero".

    loss_i = (1 - sigmoid(beta*r_w)) + sigmoid(beta*r_l): raises the chosen likelihood and lowers
    the rejected, each anchored at the reference (for chosen completions better than the model's).
    """
    return (1.0 - torch.sigmoid(params.beta * t.chosen_ratio)) + torch.sigmoid(params.beta * t.rejected_ratio)


@register_dpo("apo_down", f_divergence=False, at_reference=lambda p: 1.0)
def apo_down(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8), TRL's "apo_down".

    loss_i = sigmoid(beta*r_w) + (1 - sigmoid(beta*(r_w - r_l))): lowers both likelihoods, the
    rejected more (for chosen completions worse than the model's own).
    """
    chosen = params.beta * t.chosen_ratio
    return torch.sigmoid(chosen) + (1.0 - torch.sigmoid(chosen - params.beta * t.rejected_ratio))


@register_dpo("sft")
def sft(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """Negative log-likelihood of the chosen completions, TRL's "sft" (RPO = sigmoid + sft; MPO =
    sigmoid + bco_pair + sft with loss_weights 0.8, 0.2, 1.0).

    loss = -sum_i log pi(y_w,i) / sum_i |y_w,i|, one token-mean over the batch's chosen tokens
    (not a mean of per-pair means), given to every row so the batch mean is that value. It reads
    the unweighted log-probs even with ld_alpha, as TRL's per-token mean does; it needs no
    reference itself, but TRL's reward metrics do. The token count is clamped to 1: a batch of
    empty completions gives 0, where TRL's mean of nothing is NaN. TRL accepts an f-divergence
    with sft (for mixtures); it changes nothing here.
    """
    raw = t.raw
    nll = -raw.chosen.sum() / raw.chosen_tokens.to(raw.chosen.dtype).sum().clamp(min=1.0)
    return nll.expand(raw.chosen.shape[0])
