"""DPOTrainer loss types built on the chosen-rejected score margin Delta = f'(r_w) - f'(r_l).

Each is one pure per-pair function ``(DpoTerms, params) -> losses [B]`` over the [B] tensors of
``objectives.dpo_family.DpoTerms``; ``register_dpo`` wraps it into a registered objective that
also applies LD-DPO, WPO weighting and TRL's reward metrics. Only these take an f-divergence
other than reverse KL (TRL 1.16 allows exactly this set, plus ``sft``): the f-DPO
reparameterisation leaves a beta * log Z(x) term that cancels only in a chosen-rejected
difference. With reverse KL, Delta = h = r_w - r_l, the usual DPO margin.

Definitions follow TRL 1.16 ``trl/trainer/dpo_trainer.py`` (``_compute_loss``), named at each.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.dpo_family import LN2, DpoTerms, conservative_sigmoid, length_average, register_dpo
from objectives.types import ObjectiveParams


@register_dpo("sigmoid", at_reference=lambda p: LN2)
def sigmoid(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """DPO's sigmoid loss exactly as TRL's loss_type="sigmoid" (Rafailov et al. 2023, Eq. 7).

    loss_i = -log sigmoid(beta * Delta_i). TRL ignores label_smoothing here; ``dpo`` applies it.
    """
    return -F.logsigmoid(params.beta * t.margin)


@register_dpo("dpo", reads=("label_smoothing",), at_reference=lambda p: LN2)
def dpo(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """DPO sigmoid loss (Rafailov et al. 2023, Eq. 7); label_smoothing > 0 gives cDPO.

    loss_i = -(1-ls) log sigmoid(beta*Delta_i) - ls log sigmoid(-beta*Delta_i).
    At ls = 0 this is TRL 1.16's loss_type="sigmoid", which ignores ``label_smoothing`` (DPOConfig
    now documents it for robust DPO and EXO only). We keep the cDPO term of the reference
    implementation (and of older TRL releases) because our config documents label_smoothing for DPO.
    """
    return conservative_sigmoid(params.beta * t.margin, params.label_smoothing)


@register_dpo("hinge", at_reference=lambda p: 1.0)
def hinge(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """Hinge loss of SLiC (Zhao et al. 2023) on DPO's margin, beta = 1/margin.

    loss_i = relu(1 - beta*Delta_i), as TRL's loss_type="hinge". Pairs already beyond the margin
    give no gradient at all.
    """
    return torch.relu(1.0 - params.beta * t.margin)


@register_dpo("ipo", at_reference=lambda p: (1.0 / (2.0 * p.beta)) ** 2)
def ipo(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """IPO squared loss (Azar et al. 2023, Eq. 17), beta playing the paper's tau.

    loss_i = (f'(r_w)/|y_w| - f'(r_l)/|y_l| - 1/(2 beta))^2: the scores *per token*, as TRL's
    loss_type="ipo", otherwise the squared loss grows with completion length and the 1/(2 beta)
    target means nothing; TRL says the IPO authors confirmed the paper used this form. The reward
    metrics stay beta times the summed log-ratios, as for every DPO loss type.
    """
    margin = length_average(t.chosen_score, t.chosen_tokens) - length_average(t.rejected_score, t.rejected_tokens)
    return (margin - 1.0 / (2.0 * params.beta)) ** 2


@register_dpo("sigmoid_norm", at_reference=lambda p: LN2)
def sigmoid_norm(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """Length-normalised DPO (open-instruct's dpo_norm, the Tulu 3 recipe), TRL's "sigmoid_norm".

    loss_i = -log sigmoid(beta * (f'(r_w)/|y_w| - f'(r_l)/|y_l|)). Per-token margins are some
    hundred times smaller than summed ones, so useful betas are about 1-10, not 0.01-0.5.
    """
    margin = length_average(t.chosen_score, t.chosen_tokens) - length_average(t.rejected_score, t.rejected_tokens)
    return -F.logsigmoid(params.beta * margin)


@register_dpo("robust", reads=("label_smoothing",), at_reference=lambda p: LN2)
def robust(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"), label_smoothing = flip rate.

    loss_i = [-(1-eps) log sigmoid(beta*Delta_i) + eps log sigmoid(-beta*Delta_i)] / (1 - 2 eps),
    as TRL's loss_type="robust". Unlike cDPO the flipped term enters with a *minus* sign: this
    makes the loss an unbiased estimate of the clean-label DPO loss under random flips (so it can
    be negative), where cDPO only softens the target. The config keeps eps < 0.5.
    """
    eps = params.label_smoothing
    logits = params.beta * t.margin
    return (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)


def _exo_at_reference(params: ObjectiveParams) -> float:
    eps = params.label_smoothing
    return -LN2 - 0.5 * (math.log1p(-eps) + math.log(eps))


def _exo_needs_smoothing(params: ObjectiveParams) -> list[tuple[str, str]]:
    if params.label_smoothing > 0:
        return []
    return [("label_smoothing", "exo_pair needs label_smoothing > 0 (its target puts eps on the rejected "
             "completion and log 0 is -inf); the EXO paper uses 1e-3")]


@register_dpo("exo_pair", reads=("label_smoothing",), at_reference=_exo_at_reference, check=_exo_needs_smoothing)
def exo_pair(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """EXO-pref (Ji et al. 2024, "Towards Efficient Exact Optimization...", Eq. 16), TRL's "exo_pair".

    KL(q || p) over the pair's two completions, q = (sigmoid(beta*Delta), sigmoid(-beta*Delta)) the
    policy's implied preference and p = (1 - eps, eps) the smoothed label, eps = label_smoothing:
    loss_i = q_w (log q_w - log(1-eps)) + q_l (log q_l - log eps). Needs eps > 0.
    """
    eps = params.label_smoothing
    logits = params.beta * t.margin
    chosen = torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-eps))
    rejected = torch.sigmoid(-logits) * (F.logsigmoid(-logits) - math.log(eps))
    return chosen + rejected


@register_dpo("discopop", reads=("discopop_tau",), at_reference=lambda p: 0.5 * LN2 + 0.5)
def discopop(t: DpoTerms, params: ObjectiveParams) -> Tensor:
    """DiscoPOP's log-ratio modulated loss (Lu et al. 2024, Eq. 5), TRL's "discopop".

    From "Discovering Preference Optimization Algorithms with and for Large Language Models".
    With x = beta*Delta_i and m = sigmoid(x / discopop_tau):
    loss_i = (1 - m) * (-log sigmoid(x)) + m * exp(-x): logistic for pairs ranked wrong, the
    exponential loss for pairs ranked right.
    """
    logits = params.beta * t.margin
    mix = torch.sigmoid(logits / params.discopop_tau)
    return (1.0 - mix) * -F.logsigmoid(logits) + mix * torch.exp(-logits)
