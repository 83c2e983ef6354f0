"""TRL 1.16 DPOTrainer's loss types, f-divergences, WPO, LD-DPO and mixtures against hand
computations, and what the registry says about each (moving references, the cache, the loss at
the reference, refused settings).

Same two pairs as tests/test_objectives.py: log-ratios r_w = (0.5, 0.0), r_l = (-1.0, 0.5).
"""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from test_objectives import (
    CHOSEN,
    CHOSEN_TOKENS,
    DPO_TRAINER,
    REF_CHOSEN,
    REF_REJECTED,
    REJECTED,
    REJECTED_TOKENS,
    assert_reward_metrics,
    close,
    logsigmoid,
    paired,
    sigmoid,
)

from objectives.registry import LENGTH_TAIL, WPO_WEIGHTS, get_objective, resolve
from sweep.config.schema import ObjectiveConfig

R_W = [c - rc for c, rc in zip(CHOSEN, REF_CHOSEN)]
R_L = [r - rr for r, rr in zip(REJECTED, REF_REJECTED)]
LN2 = math.log(2.0)


def run(name, logps=None, **params):
    config = ObjectiveConfig(name=name, **params)
    return config.resolved().fn(paired() if logps is None else logps, config)


def assert_losses(out, expected):
    assert len(out.losses) == len(expected)
    assert all(close(got, want) for got, want in zip(out.losses, expected)), (out.losses.tolist(), expected)


def rewards(beta):
    return [beta * r for r in R_W], [beta * r for r in R_L]


# ---------------------------------------------------------------------------------------------
# Each loss type


def test_sigmoid_is_dpo_without_label_smoothing():
    beta = 0.3
    expected = [-logsigmoid(beta * (wi - lo)) for wi, lo in zip(R_W, R_L)]
    out = run("sigmoid", beta=beta, label_smoothing=0.2)  # TRL's sigmoid ignores label_smoothing
    assert_losses(out, expected)
    assert torch.allclose(out.losses, run("dpo", beta=beta).losses)
    assert_reward_metrics(out.metrics, *rewards(beta), CHOSEN, REJECTED)


def test_sigmoid_norm_divides_the_log_ratios_by_length():
    beta = 2.0
    expected = [-logsigmoid(beta * (wi / nw - lo / nl)) for wi, nw, lo, nl in zip(R_W, CHOSEN_TOKENS, R_L, REJECTED_TOKENS)]
    out = run("sigmoid_norm", beta=beta)
    assert_losses(out, expected)
    assert_reward_metrics(out.metrics, *rewards(beta), CHOSEN, REJECTED)  # metrics: summed, as TRL


def test_exo_pair_values():
    beta, eps = 0.5, 0.01
    expected = []
    for wi, lo in zip(R_W, R_L):
        x = beta * (wi - lo)
        expected.append(sigmoid(x) * (logsigmoid(x) - math.log(1 - eps)) + sigmoid(-x) * (logsigmoid(-x) - math.log(eps)))
    assert_losses(run("exo_pair", beta=beta, label_smoothing=eps), expected)


def test_nca_pair_values():
    beta = 0.4
    expected = [-logsigmoid(beta * wi) - 0.5 * logsigmoid(-beta * wi) - 0.5 * logsigmoid(-beta * lo) for wi, lo in zip(R_W, R_L)]
    assert_losses(run("nca_pair", beta=beta), expected)


def test_bco_pair_values_have_no_running_reward_shift():
    beta = 0.4
    expected = [-logsigmoid(beta * wi) - logsigmoid(-beta * lo) for wi, lo in zip(R_W, R_L)]
    first = run("bco_pair", beta=beta)
    assert_losses(first, expected)
    assert torch.equal(run("bco_pair", beta=beta).losses, first.losses)  # no state carried between calls


def test_sppo_hard_values():
    beta = 0.25
    expected = [(wi - 0.5 / beta) ** 2 + (lo + 0.5 / beta) ** 2 for wi, lo in zip(R_W, R_L)]
    assert_losses(run("sppo_hard", beta=beta), expected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_aot_compares_sorted_policy_and_reference_margins(label_smoothing):
    beta, ls = 0.5, label_smoothing
    policy = sorted(c - r for c, r in zip(CHOSEN, REJECTED))  # [-2, 2]
    reference = sorted(c - r for c, r in zip(REF_CHOSEN, REF_REJECTED))  # [-1.5, 0.5]
    expected = [-(1 - ls) * logsigmoid(beta * (p - q)) - ls * logsigmoid(-beta * (p - q)) for p, q in zip(policy, reference)]
    assert_losses(run("aot", beta=beta, label_smoothing=ls), expected)


def test_aot_unpaired_compares_sorted_chosen_and_rejected_ratios():
    beta = 0.5
    expected = [-logsigmoid(beta * (wi - lo)) for wi, lo in zip(sorted(R_W), sorted(R_L))]
    assert_losses(run("aot_unpaired", beta=beta), expected)


def test_apo_values():
    beta = 0.5
    zero = [(1 - sigmoid(beta * wi)) + sigmoid(beta * lo) for wi, lo in zip(R_W, R_L)]
    down = [sigmoid(beta * wi) + (1 - sigmoid(beta * (wi - lo))) for wi, lo in zip(R_W, R_L)]
    assert_losses(run("apo_zero", beta=beta), zero)
    assert_losses(run("apo_down", beta=beta), down)


def test_discopop_values():
    beta, tau = 0.5, 0.05
    expected = []
    for wi, lo in zip(R_W, R_L):
        x = beta * (wi - lo)
        m = sigmoid(x / tau)
        expected.append((1 - m) * -logsigmoid(x) + m * math.exp(-x))
    assert_losses(run("discopop", beta=beta, discopop_tau=tau), expected)


def test_sft_is_one_token_mean_over_the_batch():
    nll = -sum(CHOSEN) / sum(CHOSEN_TOKENS)  # 11/7, not the mean of 5/3 and 6/4
    out = run("sft", beta=0.1)
    assert_losses(out, [nll, nll])
    assert_reward_metrics(out.metrics, *rewards(0.1), CHOSEN, REJECTED)  # TRL logs them for sft too


def test_simpo_gamma_beta_ratio_sets_the_margin():
    assert torch.equal(run("simpo", beta=2.0, gamma_beta_ratio=0.4).losses, run("simpo", beta=2.0, gamma=0.8).losses)
    assert "gamma" not in get_objective("simpo").reads(ObjectiveConfig(name="simpo", gamma_beta_ratio=0.4))


# ---------------------------------------------------------------------------------------------
# f-divergences, LD-DPO, WPO, mixtures


def f_score(kind, r, coef=0.5):
    if kind == "reverse_kl":
        return r
    if kind == "forward_kl":
        return 1 - math.exp(-r)
    if kind == "js_divergence":
        return LN2 + logsigmoid(r)
    return (math.exp((coef - 1) * r) - 1) / (coef - 1)


@pytest.mark.parametrize("kind", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("name", ["sigmoid", "ipo"])
def test_f_divergences_replace_the_log_ratio_by_its_score(kind, name):
    beta, coef = 0.5, 0.3
    out = run(name, beta=beta, f_divergence_type=kind, f_alpha_divergence_coef=coef)
    scores_w = [f_score(kind, r, coef) for r in R_W]
    scores_l = [f_score(kind, r, coef) for r in R_L]
    if name == "sigmoid":
        expected = [-logsigmoid(beta * (wi - lo)) for wi, lo in zip(scores_w, scores_l)]
    else:
        expected = [(wi / nw - lo / nl - 1 / (2 * beta)) ** 2
                    for wi, nw, lo, nl in zip(scores_w, CHOSEN_TOKENS, scores_l, REJECTED_TOKENS)]
    assert_losses(out, expected)
    assert_reward_metrics(out.metrics, *rewards(beta), CHOSEN, REJECTED)  # rewards stay beta * log-ratio


def test_alpha_divergence_at_one_is_reverse_kl():
    one = run("sigmoid", beta=0.5, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0)
    assert torch.equal(one.losses, run("sigmoid", beta=0.5).losses)


def test_ld_dpo_weights_the_tails():
    beta, ld = 0.5, 0.25
    tails = dict(chosen_tail=[-2.0, 0.0], rejected_tail=[0.0, -1.0], ref_chosen_tail=[-1.5, 0.0],
                 ref_rejected_tail=[0.0, -1.2])
    logps = paired(**tails)
    chosen = [c - (1 - ld) * t for c, t in zip(CHOSEN, tails["chosen_tail"])]
    rejected = [r - (1 - ld) * t for r, t in zip(REJECTED, tails["rejected_tail"])]
    ref_chosen = [c - (1 - ld) * t for c, t in zip(REF_CHOSEN, tails["ref_chosen_tail"])]
    ref_rejected = [r - (1 - ld) * t for r, t in zip(REF_REJECTED, tails["ref_rejected_tail"])]
    r_w = [c - rc for c, rc in zip(chosen, ref_chosen)]
    r_l = [r - rr for r, rr in zip(rejected, ref_rejected)]
    out = run("sigmoid", logps, beta=beta, ld_alpha=ld)
    assert_losses(out, [-logsigmoid(beta * (wi - lo)) for wi, lo in zip(r_w, r_l)])
    assert_reward_metrics(out.metrics, [beta * r for r in r_w], [beta * r for r in r_l], chosen, rejected)
    assert torch.allclose(run("sigmoid", logps, beta=beta, ld_alpha=1.0).losses, run("sigmoid", beta=beta).losses)
    with pytest.raises(ValueError, match="tail log-probs"):
        run("sigmoid", beta=beta, ld_alpha=ld)


def test_wpo_weights_each_pair_by_its_mean_aligned_probabilities():
    beta = 0.5
    chosen_wpo, rejected_wpo = [-0.6, -2.0], [-0.4, -1.5]
    weights = [math.exp(c / nc + r / nr) for c, nc, r, nr in zip(chosen_wpo, CHOSEN_TOKENS, rejected_wpo, REJECTED_TOKENS)]
    logps = paired(chosen_wpo=chosen_wpo, rejected_wpo=rejected_wpo)
    plain = run("sigmoid", beta=beta)
    out = run("sigmoid", logps, beta=beta, use_weighting=True)
    assert_losses(out, [wi * float(p) for wi, p in zip(weights, plain.losses)])
    assert out.metrics.keys() == plain.metrics.keys()
    with pytest.raises(ValueError, match="WPO log-probs"):
        run("sigmoid", beta=beta, use_weighting=True)


def test_mpo_and_rpo_are_weighted_sums_with_the_first_losss_metrics():
    beta = 0.2
    mpo = run(["sigmoid", "bco_pair", "sft"], beta=beta, loss_weights=[0.8, 0.2, 1.0])
    parts = [run(n, beta=beta) for n in ("sigmoid", "bco_pair", "sft")]
    assert close(mpo.loss, 0.8 * float(parts[0].loss) + 0.2 * float(parts[1].loss) + float(parts[2].loss))
    assert mpo.metrics.keys() == parts[0].metrics.keys()
    rpo = run(["sigmoid", "sft"], beta=beta)
    assert close(rpo.loss, float(parts[0].loss) + float(parts[2].loss))
    assert resolve(["sigmoid", "sft"]).name == "sigmoid+sft"
    assert resolve("dpo", [1.0]) is get_objective("dpo")


# ---------------------------------------------------------------------------------------------
# What the registry says


AT_REFERENCE = {  # the batch loss when every log-ratio is 0, beta = 0.25, label_smoothing = 0.01
    "sigmoid": LN2, "dpo": LN2, "robust": LN2, "sigmoid_norm": LN2, "aot": LN2, "aot_unpaired": LN2,
    "hinge": 1.0, "ipo": 4.0, "sppo_hard": 8.0, "nca_pair": 2 * LN2, "bco_pair": 2 * LN2,
    "apo_zero": 1.0, "apo_down": 1.0, "discopop": 0.5 * LN2 + 0.5,
    "exo_pair": 0.5 * (math.log(0.5) - math.log(0.99)) + 0.5 * (math.log(0.5) - math.log(0.01)), "sft": None,
}


@pytest.mark.parametrize("name", DPO_TRAINER)
def test_declared_loss_at_the_reference_is_the_loss_there(name):
    params = dict(beta=0.25, label_smoothing=0.01 if name in ("exo_pair", "dpo", "robust", "aot", "aot_unpaired") else 0.0)
    config = ObjectiveConfig(name=name, **params)
    declared = config.resolved().loss_at_reference(config)
    assert declared == (None if AT_REFERENCE[name] is None else pytest.approx(AT_REFERENCE[name]))
    if declared is not None:
        out = run(name, paired(chosen=REF_CHOSEN, rejected=REF_REJECTED), **params)
        assert close(out.loss, declared)


def test_loss_at_reference_of_mixtures_and_weighted_pairs():
    assert resolve(["sigmoid", "bco_pair"], [0.5, 2.0]).loss_at_reference(ObjectiveConfig()) == pytest.approx(4.5 * LN2)
    assert resolve(["sigmoid", "sft"]).loss_at_reference(ObjectiveConfig()) is None
    assert get_objective("sigmoid").loss_at_reference(ObjectiveConfig(use_weighting=True)) is None
    assert get_objective("simpo").loss_at_reference(ObjectiveConfig()) is None


@pytest.mark.parametrize("settings, moving, cacheable", [
    (dict(name="dpo"), None, True),
    (dict(name="dpo", sync_ref_model=True, ref_model_mixup_alpha=1.0, ref_model_sync_steps=64),
     "TR-DPO hard sync every 64 steps", False),
    (dict(name="sigmoid", sync_ref_model=True), "TR-DPO soft (ref_model_mixup_alpha 0.6) sync every 512 steps", False),
    (dict(name="kto", sync_ref_model=True, ref_model_sync_steps=8), "TR-DPO soft", False),
    (dict(name="pmpo", ema_tau=0.01), "an EMA of the policy (ema_tau 0.01)", False),
    (dict(name="sigmoid", ld_alpha=0.5), None, False),
    (dict(name="sigmoid", use_weighting=True), None, True),  # WPO reads the policy only
])
def test_moving_references_and_tails_keep_the_cache_out(settings, moving, cacheable):
    config = ObjectiveConfig(**settings)
    objective = config.resolved()
    found = objective.moving_reference(config)
    assert (found is None) == (moving is None) and (moving is None or found.why.startswith(moving))
    use, why = objective.reference_cache(config)
    assert use == cacheable
    if moving:
        assert "moves during training" in why and objective.needs_live_reference(config, cached=False)
    if "ld_alpha" in settings:
        assert LENGTH_TAIL in objective.inputs(config) and "shared length" in why
    if settings.get("use_weighting"):
        assert WPO_WEIGHTS in objective.inputs(config)


def test_conditional_hyperparameters_are_read_only_when_their_gate_says_so():
    sigmoid_ = get_objective("sigmoid")
    plain = sigmoid_.reads(ObjectiveConfig(name="sigmoid"))
    assert "f_alpha_divergence_coef" not in plain and "ref_model_mixup_alpha" not in plain
    on = sigmoid_.reads(ObjectiveConfig(name="sigmoid", f_divergence_type="alpha_divergence", sync_ref_model=True))
    assert {"f_alpha_divergence_coef", "ref_model_mixup_alpha", "ref_model_sync_steps"} <= on


@pytest.mark.parametrize("settings, field", [
    (dict(name="bco_pair", f_divergence_type="forward_kl"), "f_divergence_type"),
    (dict(name=["sigmoid", "apo_zero"], f_divergence_type="js_divergence"), "f_divergence_type"),
    (dict(name="aot", use_weighting=True), "use_weighting"),
    (dict(name="simpo", ld_alpha=0.5), "ld_alpha"),
    (dict(name="orpo", sync_ref_model=True), "sync_ref_model"),
    (dict(name="dpo", ema_tau=0.1), "ema_tau"),
    (dict(name="pmpo", ema_tau=0.1, beta=0.0), "ema_tau"),
    (dict(name="exo_pair"), "label_smoothing"),
    (dict(name=["dpo", "kto"]), "name"),
    (dict(name=["dpo", "sft"], loss_weights=[1.0]), "loss_weights"),
    (dict(name="sigmoid", beta=0.0), "beta"),
])
def test_settings_an_objective_cannot_take_are_refused_by_field(settings, field):
    with pytest.raises(ValidationError, match=f"{field}:"):
        ObjectiveConfig(**settings)


def test_mixture_metrics_and_needs():
    mixture = resolve(["simpo", "sft"])
    assert mixture.needs_reference and mixture.paired and mixture.metrics == get_objective("simpo").metrics
