"""Gradients of the preference objectives: what each loss pushes up and down, and that losses
and gradients stay finite on degenerate inputs (empty completions, certain tokens, runaway
log-ratios).

Minimising the loss moves a log-prob against its gradient, so "pushed up" is a negative
gradient of the batch loss w.r.t. that log-prob and "pushed down" a positive one.
"""
from __future__ import annotations

import pytest
import torch

from objectives.registry import get_objective
from objectives.types import PairedLogps, UnpairedLogps
from sweep.config.schema import ObjectiveConfig

PAIRED = ("dpo", "ipo", "hinge", "robust", "simpo", "orpo")


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def paired_grads(name: str, **params) -> tuple[torch.Tensor, torch.Tensor]:
    # Small margins everywhere: inside the hinge, below IPO's 1/(2 beta) target, so every
    # objective is in the regime where it still wants to separate the pair.
    logps = PairedLogps(
        chosen=leaf([-5.0, -6.0, -9.0]),
        rejected=leaf([-7.0, -4.0, -8.5]),
        chosen_tokens=torch.tensor([3, 4, 6]),
        rejected_tokens=torch.tensor([2, 5, 5]),
        ref_chosen=torch.tensor([-5.5, -6.0, -9.0], dtype=torch.float64),
        ref_rejected=torch.tensor([-6.0, -4.5, -8.0], dtype=torch.float64),
    )
    get_objective(name).fn(logps, ObjectiveConfig(name=name, **params)).loss.backward()
    return logps.chosen.grad, logps.rejected.grad


@pytest.mark.parametrize("name", PAIRED)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_paired_objectives_push_chosen_up_and_rejected_down(name, beta):
    chosen_grad, rejected_grad = paired_grads(name, beta=beta)
    assert (chosen_grad < 0).all(), chosen_grad
    assert (rejected_grad > 0).all(), rejected_grad


@pytest.mark.parametrize("name", ["dpo", "robust", "simpo"])
def test_label_smoothing_keeps_the_direction(name):
    chosen_grad, rejected_grad = paired_grads(name, beta=0.1, label_smoothing=0.3)
    assert (chosen_grad < 0).all() and (rejected_grad > 0).all()


def test_cdpo_pushes_less_than_dpo():
    plain, _ = paired_grads("dpo", beta=0.1)
    smoothed, _ = paired_grads("dpo", beta=0.1, label_smoothing=0.3)
    assert (smoothed.abs() < plain.abs()).all()


def test_hinge_has_no_gradient_beyond_the_margin():
    logps = PairedLogps(
        chosen=leaf([-1.0]), rejected=leaf([-20.0]),
        chosen_tokens=torch.tensor([2]), rejected_tokens=torch.tensor([2]),
        ref_chosen=torch.tensor([-5.0], dtype=torch.float64), ref_rejected=torch.tensor([-5.0], dtype=torch.float64),
    )
    get_objective("hinge").fn(logps, ObjectiveConfig(name="hinge", beta=0.5)).loss.backward()
    assert logps.chosen.grad.item() == 0.0 and logps.rejected.grad.item() == 0.0


def test_ipo_pulls_back_a_pair_past_its_target():
    # IPO regresses the margin onto 1/(2 beta) = 1 per token: a pair beyond it is pushed back.
    logps = PairedLogps(
        chosen=leaf([-1.0]), rejected=leaf([-20.0]),
        chosen_tokens=torch.tensor([2]), rejected_tokens=torch.tensor([2]),
        ref_chosen=torch.tensor([-5.0], dtype=torch.float64), ref_rejected=torch.tensor([-5.0], dtype=torch.float64),
    )
    get_objective("ipo").fn(logps, ObjectiveConfig(name="ipo", beta=0.5)).loss.backward()
    assert logps.chosen.grad.item() > 0 and logps.rejected.grad.item() < 0


# ---------------------------------------------------------------------------------------------
# Unpaired objectives


ACCEPTED = torch.tensor([True, False, True, False, False])


def unpaired(**overrides) -> UnpairedLogps:
    fields = dict(
        logps=leaf([-5.0, -6.0, -3.0, -2.0, -7.0]),
        tokens=torch.tensor([3, 4, 2, 2, 5]),
        accepted=ACCEPTED,
        ref_logps=torch.tensor([-5.5, -6.0, -2.0, -2.5, -7.0], dtype=torch.float64),
        kl_logps=leaf([-4.0, -5.0, -6.0, -7.0, -3.0]),
        ref_kl_logps=torch.tensor([-4.5, -5.0, -6.2, -7.3, -3.0], dtype=torch.float64),
    )
    fields.update(overrides)
    return UnpairedLogps(**fields)


def unpaired_grad(name: str, logps: UnpairedLogps, **params) -> torch.Tensor:
    get_objective(name).fn(logps, ObjectiveConfig(name=name, **params)).loss.backward()
    return logps.logps.grad


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.3, 0.7)])
def test_kto_pushes_accepted_up_and_rejected_down(weights):
    logps = unpaired()
    grad = unpaired_grad("kto", logps, beta=0.5, desirable_weight=weights[0], undesirable_weight=weights[1])
    assert (grad[ACCEPTED] < 0).all() and (grad[~ACCEPTED] > 0).all()
    assert logps.kl_logps.grad is None  # the baseline is detached


def test_pmpo_alpha_one_pushes_only_accepted_up():
    grad = unpaired_grad("pmpo", unpaired(), beta=0.0, alpha=1.0)
    assert (grad[ACCEPTED] < 0).all()
    assert (grad[~ACCEPTED] == 0).all()


def test_pmpo_alpha_zero_pushes_rejected_down():
    grad = unpaired_grad("pmpo", unpaired(), beta=0.0, alpha=0.0)
    assert (grad[~ACCEPTED] > 0).all()


def test_pmpo_alpha_zero_beta_zero_leaves_accepted_rows_alone():
    grad = unpaired_grad("pmpo", unpaired(), beta=0.0, alpha=0.0)
    assert torch.equal(grad[ACCEPTED], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_pmpo_row_gradients_are_per_set_means(alpha):
    # d(-J)/d log pi_i = -alpha / n_accept on accepted rows, (1 - alpha) / n_reject on rejected rows.
    grad = unpaired_grad("pmpo", unpaired(), beta=0.0, alpha=alpha)
    n_accepted, n_rejected = int(ACCEPTED.sum()), int((~ACCEPTED).sum())
    assert torch.allclose(grad[ACCEPTED], torch.full((n_accepted,), -alpha / n_accepted, dtype=torch.float64))
    assert torch.allclose(grad[~ACCEPTED], torch.full((n_rejected,), (1 - alpha) / n_rejected, dtype=torch.float64))


def test_pmpo_sample_kl_pulls_the_policy_back_to_the_reference():
    # Only the KL acts (alpha = 0, accepted rows): rows above the reference are pushed down,
    # rows below it up, rows equal to it not at all.
    logps = unpaired(accepted=torch.ones(5, dtype=torch.bool))
    grad = unpaired_grad("pmpo", logps, beta=1.0, alpha=0.0)
    diff = logps.logps.detach() - logps.ref_logps
    assert (grad[diff > 0] > 0).all() and (grad[diff < 0] < 0).all() and (grad[diff == 0] == 0).all()


def test_pmpo_exact_kl_carries_its_gradient():
    exact = leaf([0.1, 0.2, 0.3, 0.4, 0.5])
    logps = unpaired(ref_logps=None, exact_kl=exact)
    unpaired_grad("pmpo", logps, beta=0.4, alpha=0.5, kl_estimator="exact")
    assert torch.allclose(exact.grad, torch.full((5,), 0.4 / 5, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# TRL's other DPOTrainer loss types, f-divergences, WPO and LD-DPO


def near_reference(name: str, margin_scale: float = 1.0, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. chosen and rejected log-probs for three pairs a little off the reference
    (log-ratios within +-0.3 nats, times `margin_scale`), with LD tails and WPO inputs given."""
    ref_chosen = torch.tensor([-5.0, -6.0, -9.0], dtype=torch.float64)
    ref_rejected = torch.tensor([-6.0, -4.5, -8.0], dtype=torch.float64)
    chosen = leaf((ref_chosen + margin_scale * torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)).tolist())
    rejected = leaf((ref_rejected + margin_scale * torch.tensor([-0.1, 0.3, 0.0], dtype=torch.float64)).tolist())
    tail = lambda x: 0.3 * x  # noqa: E731 - a share of the sum past the shared length
    logps = PairedLogps(
        chosen=chosen, rejected=rejected, chosen_tokens=torch.tensor([3, 4, 6]), rejected_tokens=torch.tensor([2, 5, 5]),
        ref_chosen=ref_chosen, ref_rejected=ref_rejected, chosen_tail=tail(chosen), rejected_tail=tail(rejected),
        ref_chosen_tail=tail(ref_chosen), ref_rejected_tail=tail(ref_rejected),
        chosen_wpo=leaf([-1.0, -2.0, -1.5]), rejected_wpo=leaf([-0.5, -1.0, -2.5]),
    )
    config = ObjectiveConfig(name=name, **params)
    config.resolved().fn(logps, config).loss.backward()
    assert logps.chosen_wpo.grad is None or not logps.chosen_wpo.grad.any()  # WPO's weights carry no gradient
    return chosen.grad, rejected.grad


SEPARATING = ["sigmoid", "sigmoid_norm", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero"]


@pytest.mark.parametrize("name", SEPARATING)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_trl_losses_push_chosen_up_and_rejected_down(name, beta):
    chosen_grad, rejected_grad = near_reference(name, beta=beta)
    assert (chosen_grad < 0).all(), chosen_grad
    assert (rejected_grad > 0).all(), rejected_grad


@pytest.mark.parametrize("settings", [
    dict(f_divergence_type="forward_kl"), dict(f_divergence_type="js_divergence"),
    dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3), dict(use_weighting=True),
    dict(ld_alpha=0.5), dict(label_smoothing=1e-3, name="exo_pair"), dict(name="hinge"), dict(name="ipo"),
    dict(name=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
])
def test_f_divergences_wpo_ld_and_mixtures_keep_the_direction(settings):
    settings = {"name": "sigmoid", "beta": 0.3, **settings}
    chosen_grad, rejected_grad = near_reference(**settings)
    assert (chosen_grad < 0).all() and (rejected_grad > 0).all(), (chosen_grad, rejected_grad)


def test_wpo_scales_each_pair_by_its_weight():
    plain, _ = near_reference("sigmoid", beta=0.3)
    weighted, _ = near_reference("sigmoid", beta=0.3, use_weighting=True)
    # exp(mean aligned log-probs) of both completions: 0.5 nats or more below 0, so weights < 1.
    assert (weighted.abs() < plain.abs()).all() and (weighted != 0).all()


def test_ld_alpha_shrinks_the_pull_on_the_tails():
    full, _ = near_reference("sigmoid", beta=0.3)
    half, _ = near_reference("sigmoid", beta=0.3, ld_alpha=0.5)
    assert (half.abs() < full.abs()).all()


def test_apo_down_lowers_the_pair_and_widens_its_margin():
    chosen_grad, rejected_grad = near_reference("apo_down", beta=0.5)
    assert (chosen_grad + rejected_grad > 0).all()  # both likelihoods, taken together, pushed down
    assert (rejected_grad > 0).all() and (rejected_grad > chosen_grad).all()  # the rejected more


@pytest.mark.parametrize("margin_scale", [-20.0, 20.0])
def test_discopop_separates_pairs_away_from_its_switch(margin_scale):
    # beta * margin of +-2 and more: logistic for wrongly ranked pairs, exponential for right ones. Near a
    # margin of 0 its sigmoid(x / tau) switch may push either way (the paper's loss is not convex there).
    chosen_grad, rejected_grad = near_reference("discopop", margin_scale=margin_scale, beta=0.5)
    assert (chosen_grad[:2] < 0).all() and (rejected_grad[:2] > 0).all(), (chosen_grad, rejected_grad)


def test_sft_raises_only_the_chosen_completions():
    chosen_grad, rejected_grad = near_reference("sft")
    assert (chosen_grad < 0).all() and (rejected_grad is None or not rejected_grad.any())


# ---------------------------------------------------------------------------------------------
# Degenerate and missing inputs


@pytest.mark.parametrize("name", ["dpo", "ipo", "hinge", "robust"])
def test_reference_objectives_refuse_missing_reference(name):
    logps = PairedLogps(chosen=leaf([-5.0]), rejected=leaf([-7.0]),
                        chosen_tokens=torch.tensor([3]), rejected_tokens=torch.tensor([2]))
    with pytest.raises(ValueError, match="reference"):
        get_objective(name).fn(logps, ObjectiveConfig(name=name))


@pytest.mark.parametrize("name, params, missing, error", [
    ("kto", {}, {"kl_logps": None}, "mismatched"),
    ("pmpo", {"kl_estimator": "sample"}, {"ref_logps": None}, "ref_logps"),
    ("pmpo", {"kl_estimator": "exact"}, {}, "exact_kl"),
])
def test_unpaired_objectives_refuse_missing_inputs(name, params, missing, error):
    with pytest.raises(ValueError, match=error):
        get_objective(name).fn(unpaired(**missing), ObjectiveConfig(name=name, beta=0.1, **params))


def finite_loss_and_grads(name: str, logps, *leaves, **params) -> bool:
    out = get_objective(name).fn(logps, ObjectiveConfig(name=name, **params))
    out.loss.backward()
    return bool(torch.isfinite(out.losses).all() and all(torch.isfinite(x.grad).all() for x in leaves))


@pytest.mark.parametrize("name", ["ipo", "simpo", "orpo"])
def test_length_normalised_objectives_survive_empty_completions(name):
    # A completion truncated to zero tokens: counts are clamped to 1 instead of dividing by 0.
    chosen, rejected = leaf([0.0, -6.0]), leaf([-7.0, -4.0])
    logps = PairedLogps(
        chosen=chosen, rejected=rejected, chosen_tokens=torch.tensor([0, 4]), rejected_tokens=torch.tensor([2, 5]),
        ref_chosen=torch.tensor([0.0, -6.0], dtype=torch.float64),
        ref_rejected=torch.tensor([-6.0, -4.5], dtype=torch.float64),
    )
    assert finite_loss_and_grads(name, logps, chosen, rejected, beta=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_survives_certain_completions(dtype):
    # Average log-prob 0 (every token certain) would make log(1 - p) = log 0.
    chosen = torch.tensor([0.0, -1e-30], dtype=dtype, requires_grad=True)
    rejected = torch.tensor([-7.0, -4.0], dtype=dtype, requires_grad=True)
    logps = PairedLogps(chosen=chosen, rejected=rejected,
                        chosen_tokens=torch.tensor([3, 4]), rejected_tokens=torch.tensor([2, 5]))
    assert finite_loss_and_grads("orpo", logps, chosen, rejected, beta=0.1)


@pytest.mark.parametrize("dtype, gap", [(torch.float64, 1000.0), (torch.float32, 200.0), (torch.float32, -200.0)])
def test_pmpo_sample_kl_survives_runaway_log_ratios(dtype, gap):
    logps = UnpairedLogps(
        logps=torch.tensor([-5.0, -6.0, -3.0], dtype=dtype, requires_grad=True),
        tokens=torch.tensor([3, 4, 2]),
        accepted=torch.tensor([True, False, False]),
        ref_logps=torch.tensor([-5.0 - gap, -6.0 - gap, -3.0 - gap], dtype=dtype),
    )
    assert finite_loss_and_grads("pmpo", logps, logps.logps, beta=0.5, alpha=0.5)
