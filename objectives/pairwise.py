"""Paired preference objectives: one chosen and one rejected completion per prompt.

Each objective is a pure function of per-sequence log-probs, in the style of
eric-mitchell/direct-preference-optimization's ``dpo_loss``::

    fn(logps: PairedLogps, params: ObjectiveParams) -> LossOutput

All inputs are ``[B]`` tensors (B = number of pairs); ``LossOutput.losses`` is ``[B]`` and its
mean is the batch loss. Losses and metric definitions follow TRL 1.16 (file named at each
function) so that numbers are comparable with a TRL run on the same data. Only metrics that can
be computed from per-sequence log-probs are reported (TRL's ``logits/*``, ``entropy`` and
``mean_token_accuracy`` need the logits and are left to the worker).

Length-normalised objectives (IPO, SimPO, ORPO) divide by the completion token count clamped to
at least 1, as TRL's DPO trainer does for IPO; TRL's CPO/ORPO trainers do not clamp, which turns
an empty completion into NaN instead of an ordinary (if meaningless) value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.registry import register
from objectives.types import LossOutput, ObjectiveParams, PairedLogps, detached_mean

# TRL logs these for every DPO loss type and for CPO/SimPO/ORPO alike.
REWARD_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def _reward_metrics(
    chosen_rewards: Tensor, rejected_rewards: Tensor, chosen_logps: Tensor, rejected_logps: Tensor
) -> dict[str, Tensor]:
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


def _require_reference(logps: PairedLogps, name: str) -> tuple[Tensor, Tensor]:
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(f"{name} needs reference log-probs (ref_chosen, ref_rejected)")
    return logps.ref_chosen, logps.ref_rejected


def _dpo_rewards(logps: PairedLogps, params: ObjectiveParams, name: str) -> tuple[Tensor, Tensor]:
    """Implicit DPO rewards beta * log(pi/pi_ref) of the summed sequence log-probs, [B] each."""
    ref_chosen, ref_rejected = _require_reference(logps, name)
    return params.beta * (logps.chosen - ref_chosen), params.beta * (logps.rejected - ref_rejected)


def _length_average(total: Tensor, tokens: Tensor) -> Tensor:
    return total / tokens.to(total.dtype).clamp(min=1.0)


def _conservative_sigmoid(logits: Tensor, label_smoothing: float) -> Tensor:
    """-log sigmoid(logits), with a label_smoothing share of the pairs assumed flipped (cDPO).

    Mitchell 2023, "A note on DPO with noisy preferences" (cDPO); the same expression as
    eric-mitchell/direct-preference-optimization ``dpo_loss`` and TRL's CPO trainer.
    """
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@register(
    "dpo",
    paired=True,
    needs_reference=True,
    hyperparameters=("beta", "label_smoothing"),
    metrics=REWARD_METRICS,
)
def dpo(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """DPO sigmoid loss (Rafailov et al. 2023, Eq. 7); label_smoothing > 0 gives cDPO.

    Shapes: every field of ``logps`` is [B]; returns losses [B].
    loss_i = -(1-ls) log sigmoid(beta*h_i) - ls log sigmoid(-beta*h_i),
    h_i = (chosen_i - ref_chosen_i) - (rejected_i - ref_rejected_i).

    TRL 1.16 ``trl/trainer/dpo_trainer.py`` (loss_type="sigmoid") is the ls = 0 case: its sigmoid
    loss ignores ``label_smoothing``, which DPOConfig now documents for robust DPO and EXO only.
    We keep the cDPO term of the reference implementation (and of older TRL releases) because
    our config documents label_smoothing for DPO; at the default ls = 0 the loss equals TRL's.
    """
    chosen_rewards, rejected_rewards = _dpo_rewards(logps, params, "dpo")
    losses = _conservative_sigmoid(chosen_rewards - rejected_rewards, params.label_smoothing)
    return LossOutput(
        losses, _reward_metrics(chosen_rewards, rejected_rewards, logps.chosen, logps.rejected)
    )


@register("ipo", paired=True, needs_reference=True, hyperparameters=("beta",), metrics=REWARD_METRICS)
def ipo(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """IPO squared loss (Azar et al. 2023, Eq. 17), beta playing the paper's tau.

    Shapes: every field of ``logps`` is [B]; returns losses [B].
    loss_i = (h_i - 1/(2 beta))^2 with h_i the difference of *per-token averaged* log-ratios.

    As TRL 1.16 ``trl/trainer/dpo_trainer.py`` (loss_type="ipo"): the log-ratios are divided by
    the completion token counts, otherwise the squared loss grows with completion length and the
    1/(2 beta) target means nothing; TRL says the IPO authors confirmed the paper used this form.
    The reward metrics, however, stay beta times the *summed* log-ratios, as TRL logs them for
    every DPO loss type.
    """
    ref_chosen, ref_rejected = _require_reference(logps, "ipo")
    chosen_ratio = _length_average(logps.chosen - ref_chosen, logps.chosen_tokens)
    rejected_ratio = _length_average(logps.rejected - ref_rejected, logps.rejected_tokens)
    losses = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * params.beta)) ** 2
    chosen_rewards, rejected_rewards = _dpo_rewards(logps, params, "ipo")
    return LossOutput(
        losses, _reward_metrics(chosen_rewards, rejected_rewards, logps.chosen, logps.rejected)
    )


@register("hinge", paired=True, needs_reference=True, hyperparameters=("beta",), metrics=REWARD_METRICS)
def hinge(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """Hinge loss of SLiC (Zhao et al. 2023) on DPO's log-ratios, beta = 1/margin.

    Shapes: every field of ``logps`` is [B]; returns losses [B].
    loss_i = relu(1 - beta*h_i), h_i the difference of summed log-ratios, as TRL 1.16
    ``trl/trainer/dpo_trainer.py`` (loss_type="hinge"). Pairs already beyond the margin give
    no gradient at all.
    """
    chosen_rewards, rejected_rewards = _dpo_rewards(logps, params, "hinge")
    losses = torch.relu(1.0 - (chosen_rewards - rejected_rewards))
    return LossOutput(
        losses, _reward_metrics(chosen_rewards, rejected_rewards, logps.chosen, logps.rejected)
    )


@register(
    "robust",
    paired=True,
    needs_reference=True,
    hyperparameters=("beta", "label_smoothing"),
    metrics=REWARD_METRICS,
)
def robust(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"), label_smoothing = flip rate.

    Shapes: every field of ``logps`` is [B]; returns losses [B].
    loss_i = [-(1-eps) log sigmoid(beta*h_i) + eps log sigmoid(-beta*h_i)] / (1 - 2 eps).

    As TRL 1.16 ``trl/trainer/dpo_trainer.py`` (loss_type="robust"). Unlike cDPO the flipped term
    enters with a *minus* sign: this makes the loss an unbiased estimate of the clean-label DPO
    loss under random flips (so it can be negative), where cDPO only softens the target.
    eps = 0 is plain DPO; the config keeps eps < 0.5 so the denominator stays positive.
    """
    eps = params.label_smoothing
    chosen_rewards, rejected_rewards = _dpo_rewards(logps, params, "robust")
    logits = chosen_rewards - rejected_rewards
    losses = (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)
    return LossOutput(
        losses, _reward_metrics(chosen_rewards, rejected_rewards, logps.chosen, logps.rejected)
    )


@register(
    "simpo",
    paired=True,
    needs_reference=False,
    hyperparameters=("beta", "gamma", "label_smoothing"),
    metrics=REWARD_METRICS,
)
def simpo(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """SimPO (Meng et al. 2024, Eq. 6): reference-free, length-averaged, with a target margin.

    Shapes: every field of ``logps`` is [B] (reference fields ignored); returns losses [B].
    loss_i = -(1-ls) log sigmoid(beta*d_i - gamma) - ls log sigmoid(-(beta*d_i - gamma)),
    d_i = chosen_i/|y_w| - rejected_i/|y_l|.

    As TRL 1.16 ``trl/experimental/cpo/cpo_trainer.py`` with loss_type="simpo", simpo_gamma =
    ``gamma`` (TRL divides it by beta and multiplies back, so gamma is the paper's absolute
    margin), and cpo_alpha = 0: the SimPO paper has no NLL term. TRL's CPOConfig defaults
    cpo_alpha to 1.0, which is CPO's behaviour-cloning regulariser, and its CPO trainer docs tell
    SimPO users to set ``cpo_alpha=0``; TRL's ``nll_loss`` metric is then a constant 0, so we do not
    report it.

    Metrics as TRL's CPO trainer logs them: rewards are beta times the *length-averaged* log-probs
    and ``logps/chosen`` / ``logps/rejected`` are the length-averaged log-probs too (not sums).
    """
    chosen = _length_average(logps.chosen, logps.chosen_tokens)
    rejected = _length_average(logps.rejected, logps.rejected_tokens)
    chosen_rewards, rejected_rewards = params.beta * chosen, params.beta * rejected
    losses = _conservative_sigmoid(chosen_rewards - rejected_rewards - params.gamma, params.label_smoothing)
    return LossOutput(losses, _reward_metrics(chosen_rewards, rejected_rewards, chosen, rejected))


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, switching at -ln 2 to avoid cancellation (Maechler 2012).

    Same values as TRL's ORPO ``log1mexp``, two guards added. x is kept strictly below 0: a
    completion whose every token has probability 1 would otherwise give log(0). And each branch
    only sees inputs on its own side of -ln 2: ``torch.where`` differentiates both branches, and
    log1p(-exp(x)) at x ~ 0 is -inf, whose gradient times 0 is NaN.
    """
    threshold = -0.6931471805599453
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    far = x < threshold
    x_far, x_near = torch.where(far, x, threshold), torch.where(far, threshold, x)
    return torch.where(far, torch.log1p(-torch.exp(x_far)), torch.log(-torch.expm1(x_near)))


@register(
    "orpo",
    paired=True,
    needs_reference=False,
    hyperparameters=("beta",),
    metrics=(*REWARD_METRICS, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
)
def orpo(logps: PairedLogps, params: ObjectiveParams) -> LossOutput:
    """ORPO (Hong et al. 2024, Eqs. 6-7): NLL of the chosen completion plus an odds-ratio term.

    Shapes: every field of ``logps`` is [B] (reference fields ignored); returns losses [B].
    With p = exp(length-averaged log-prob) and odds(p) = p/(1-p):
    loss = NLL_chosen - beta * mean_i log sigmoid(log odds(p_w,i) - log odds(p_l,i)),
    beta being the paper's lambda, as TRL 1.16 ``trl/experimental/orpo/orpo_trainer.py``
    (``odds_ratio_loss`` and ``get_batch_loss_metrics``).

    NLL_chosen is token-averaged over the whole batch (sum of chosen log-probs over the sum of
    chosen tokens), as TRL's ``nn.CrossEntropyLoss`` mean; row i carries B * its own share so
    that ``losses.mean()`` is exactly that. One deliberate difference: TRL's NLL also covers the
    *prompt* tokens (its code says so); our inputs are completion log-probs only, so the NLL is
    over the completion, which is the paper's L_SFT on y.

    Metrics as TRL names them, including its swapped-looking names: ``log_odds_ratio`` is the
    batch mean of log sigmoid(log odds ratio) and ``log_odds_chosen`` the mean log odds ratio;
    rewards are beta times the length-averaged log-probs, ``logps/*`` the length-averaged log-probs.
    """
    chosen_avg = _length_average(logps.chosen, logps.chosen_tokens)
    rejected_avg = _length_average(logps.rejected, logps.rejected_tokens)
    # TRL computes the odds ratio in float32 even under bf16 autocast: log1mexp near 0 needs it.
    work_dtype = torch.promote_types(chosen_avg.dtype, torch.float32)
    chosen_w, rejected_w = chosen_avg.to(work_dtype), rejected_avg.to(work_dtype)
    log_odds = (chosen_w - rejected_w) - (_log1mexp(chosen_w) - _log1mexp(rejected_w))
    log_sigmoid_odds = F.logsigmoid(log_odds)

    batch = logps.chosen.numel()
    chosen_tokens = logps.chosen_tokens.to(logps.chosen.dtype).sum().clamp(min=1.0)
    nll_rows = -logps.chosen * batch / chosen_tokens
    losses = nll_rows.to(work_dtype) - params.beta * log_sigmoid_odds

    metrics = _reward_metrics(params.beta * chosen_avg, params.beta * rejected_avg, chosen_avg, rejected_avg)
    metrics["nll_loss"] = detached_mean(nll_rows)
    metrics["log_odds_ratio"] = detached_mean(log_sigmoid_odds)
    metrics["log_odds_chosen"] = detached_mean(log_odds)
    return LossOutput(losses, metrics)
