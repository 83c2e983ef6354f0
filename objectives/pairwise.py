"""Reference-free paired objectives: SimPO and ORPO (one chosen and one rejected completion per prompt).

Each objective is a pure function of per-sequence log-probs, in the style of
eric-mitchell/direct-preference-optimization's ``dpo_loss``::

    fn(logps: PairedLogps, params: ObjectiveParams) -> LossOutput

All inputs are ``[B]`` tensors (B = number of pairs); ``LossOutput.losses`` is ``[B]`` and its
mean is the batch loss. Losses and metric definitions follow TRL 1.16 (file named at each
function) so that numbers are comparable with a TRL run on the same data. Only metrics that can
be computed from per-sequence log-probs are reported (TRL's ``logits/*``, ``entropy`` and
``mean_token_accuracy`` need the logits and are left to the worker). The loss types of TRL's
DPOTrainer (dpo, ipo, hinge, robust and the rest) are in ``objectives.dpo_margin`` and
``objectives.dpo_ratios``.

Length-normalised objectives divide by the completion token count clamped to at least 1, as
TRL's DPO trainer does for IPO; TRL's CPO/ORPO trainers do not clamp, which turns an empty
completion into NaN instead of an ordinary (if meaningless) value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.dpo_family import REWARD_METRICS, conservative_sigmoid, length_average, reward_metrics
from objectives.registry import When, register
from objectives.types import LossOutput, ObjectiveParams, PairedLogps, detached_mean


@register(
    "simpo",
    paired=True,
    needs_reference=False,
    hyperparameters=("beta", "gamma_beta_ratio", "gamma", "label_smoothing"),
    read_when={"gamma": When("gamma_beta_ratio", lambda ratio: ratio is None)},
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
    report it. With ``gamma_beta_ratio`` set, gamma = gamma_beta_ratio * beta (the SimPO paper's and
    its code's parameterisation, whose useful range is 0.1-0.8 whatever beta is) and ``gamma`` is
    not read.

    Metrics as TRL's CPO trainer logs them: rewards are beta times the *length-averaged* log-probs
    and ``logps/chosen`` / ``logps/rejected`` are the length-averaged log-probs too (not sums).
    """
    chosen = length_average(logps.chosen, logps.chosen_tokens)
    rejected = length_average(logps.rejected, logps.rejected_tokens)
    chosen_rewards, rejected_rewards = params.beta * chosen, params.beta * rejected
    gamma = params.gamma if params.gamma_beta_ratio is None else params.gamma_beta_ratio * params.beta
    losses = conservative_sigmoid(chosen_rewards - rejected_rewards - gamma, params.label_smoothing)
    return LossOutput(losses, reward_metrics(chosen_rewards, rejected_rewards, chosen, rejected))


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
    chosen_avg = length_average(logps.chosen, logps.chosen_tokens)
    rejected_avg = length_average(logps.rejected, logps.rejected_tokens)
    # TRL computes the odds ratio in float32 even under bf16 autocast: log1mexp near 0 needs it.
    work_dtype = torch.promote_types(chosen_avg.dtype, torch.float32)
    chosen_w, rejected_w = chosen_avg.to(work_dtype), rejected_avg.to(work_dtype)
    log_odds = (chosen_w - rejected_w) - (_log1mexp(chosen_w) - _log1mexp(rejected_w))
    log_sigmoid_odds = F.logsigmoid(log_odds)

    batch = logps.chosen.numel()
    chosen_tokens = logps.chosen_tokens.to(logps.chosen.dtype).sum().clamp(min=1.0)
    nll_rows = -logps.chosen * batch / chosen_tokens
    losses = nll_rows.to(work_dtype) - params.beta * log_sigmoid_odds

    metrics = reward_metrics(params.beta * chosen_avg, params.beta * rejected_avg, chosen_avg, rejected_avg)
    metrics["nll_loss"] = detached_mean(nll_rows)
    metrics["log_odds_ratio"] = detached_mean(log_sigmoid_odds)
    metrics["log_odds_chosen"] = detached_mean(log_odds)
    return LossOutput(losses, metrics)
