"""Values of the preference objectives against hand computations, and their registry metadata.

Expected numbers are computed row by row with ``math`` on plain floats, independently of the
tensor code under test. Gradient directions are in tests/test_objective_grads.py.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from objectives.registry import EXACT_KL, LENGTH_TAIL, MISMATCHED_KL, WPO_WEIGHTS, get_objective, objective_names
from objectives.types import PairedLogps, UnpairedLogps
from sweep.config.schema import ObjectiveConfig

# TRL 1.16 DPOTrainer's loss types (ours: dpo is its sigmoid plus cDPO), then the other paired ones.
DPO_TRAINER = ("sigmoid", "dpo", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
               "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
PAIRED = (*DPO_TRAINER, "simpo", "orpo")
UNPAIRED = ("kto", "pmpo")


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def run(name: str, logps, **params):
    return get_objective(name).fn(logps, ObjectiveConfig(name=name, **params))


def close(tensor: torch.Tensor, expected: float) -> bool:
    # Losses keep the inputs' float64; metrics are float32 (``detached_mean``).
    tol = 1e-10 if torch.as_tensor(tensor).dtype == torch.float64 else 1e-6
    return math.isclose(float(tensor), expected, rel_tol=tol, abs_tol=tol)


# Two pairs; float64 so hand values match to 1e-10.
CHOSEN, REJECTED = [-5.0, -6.0], [-7.0, -4.0]
REF_CHOSEN, REF_REJECTED = [-5.5, -6.0], [-6.0, -4.5]
CHOSEN_TOKENS, REJECTED_TOKENS = [3, 4], [2, 5]
CHOSEN_AVG = [c / n for c, n in zip(CHOSEN, CHOSEN_TOKENS)]  # SimPO and ORPO's length-averaged log-probs
REJECTED_AVG = [r / n for r, n in zip(REJECTED, REJECTED_TOKENS)]


def paired(**overrides) -> PairedLogps:
    fields = {**dict(chosen=CHOSEN, rejected=REJECTED, chosen_tokens=CHOSEN_TOKENS, rejected_tokens=REJECTED_TOKENS,
                     ref_chosen=REF_CHOSEN, ref_rejected=REF_REJECTED), **overrides}
    return PairedLogps(**{
        k: None if v is None else torch.tensor(v, dtype=torch.long if k.endswith("tokens") else torch.float64)
        for k, v in fields.items()
    })


def dpo_rewards(beta: float) -> tuple[list[float], list[float]]:
    return ([beta * (c - rc) for c, rc in zip(CHOSEN, REF_CHOSEN)],
            [beta * (r - rr) for r, rr in zip(REJECTED, REF_REJECTED)])


def assert_reward_metrics(metrics, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps):
    assert close(metrics["rewards/chosen"], mean(chosen_rewards))
    assert close(metrics["rewards/rejected"], mean(rejected_rewards))
    assert close(metrics["rewards/margins"], mean(c - r for c, r in zip(chosen_rewards, rejected_rewards)))
    assert close(metrics["rewards/accuracies"], mean(float(c > r) for c, r in zip(chosen_rewards, rejected_rewards)))
    assert close(metrics["logps/chosen"], mean(chosen_logps))
    assert close(metrics["logps/rejected"], mean(rejected_logps))


# ---------------------------------------------------------------------------------------------
# Registry metadata


def test_every_objective_is_registered():
    assert set(objective_names()) == set(PAIRED) | set(UNPAIRED)


DPO_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected"}
# TRL's KTOTrainer logs no rewards/accuracies (no pairs to compare); PMPO has no implicit reward.
KTO_METRICS = DPO_METRICS - {"rewards/accuracies"} | {"kl"}
PMPO_METRICS = {"logps/accepted", "logps/rejected", "logps/margins", "kl"}


# Every DPOTrainer loss type reads these (TRL applies LD-DPO and TR-DPO to all of them).
DPO_COMMON = {"beta", "ld_alpha", "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps"}
F_DIV = {"f_divergence_type", "f_alpha_divergence_coef"}
TR_DPO = {"sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps"}
DPO_INPUTS = {LENGTH_TAIL, WPO_WEIGHTS}


@pytest.mark.parametrize("name, is_paired, needs_reference, hyperparameters, extra_inputs, metrics", [
    ("sigmoid", True, True, DPO_COMMON | F_DIV | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("dpo", True, True, DPO_COMMON | F_DIV | {"use_weighting", "label_smoothing"}, DPO_INPUTS, DPO_METRICS),
    ("ipo", True, True, DPO_COMMON | F_DIV | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("hinge", True, True, DPO_COMMON | F_DIV | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("robust", True, True, DPO_COMMON | F_DIV | {"use_weighting", "label_smoothing"}, DPO_INPUTS, DPO_METRICS),
    ("exo_pair", True, True, DPO_COMMON | F_DIV | {"use_weighting", "label_smoothing"}, DPO_INPUTS, DPO_METRICS),
    ("discopop", True, True, DPO_COMMON | F_DIV | {"use_weighting", "discopop_tau"}, DPO_INPUTS, DPO_METRICS),
    ("sigmoid_norm", True, True, DPO_COMMON | F_DIV | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("sft", True, True, DPO_COMMON | F_DIV | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("nca_pair", True, True, DPO_COMMON | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("bco_pair", True, True, DPO_COMMON | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("sppo_hard", True, True, DPO_COMMON | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("apo_zero", True, True, DPO_COMMON | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("apo_down", True, True, DPO_COMMON | {"use_weighting"}, DPO_INPUTS, DPO_METRICS),
    ("aot", True, True, DPO_COMMON | {"label_smoothing"}, {LENGTH_TAIL}, DPO_METRICS),  # no WPO: sorted rows
    ("aot_unpaired", True, True, DPO_COMMON | {"label_smoothing"}, {LENGTH_TAIL}, DPO_METRICS),
    ("simpo", True, False, {"beta", "gamma", "gamma_beta_ratio", "label_smoothing"}, set(), DPO_METRICS),
    ("orpo", True, False, {"beta"}, set(), DPO_METRICS | {"nll_loss", "log_odds_ratio", "log_odds_chosen"}),
    ("kto", False, True, {"beta", "desirable_weight", "undesirable_weight"} | TR_DPO, {MISMATCHED_KL}, KTO_METRICS),
    ("pmpo", False, True, {"alpha", "beta", "kl_estimator", "ema_tau"}, {EXACT_KL}, PMPO_METRICS),
])
def test_registry_metadata(name, is_paired, needs_reference, hyperparameters, extra_inputs, metrics):
    objective = get_objective(name)
    assert (objective.paired, objective.needs_reference) == (is_paired, needs_reference)
    assert set(objective.hyperparameters) == hyperparameters
    assert set(objective.hyperparameters) <= set(ObjectiveConfig.model_fields) - {"name"}
    assert set(objective.extra_inputs) == extra_inputs
    assert objective.metrics == ("loss", *objective.metrics[1:]) and set(objective.metrics[1:]) == metrics
    assert objective.summary


@pytest.mark.parametrize("name, kl_estimator, inputs, cacheable, live_with_cache", [
    ("dpo", "sample", set(), True, False),
    ("simpo", "sample", set(), False, False),  # no reference at all
    ("kto", "sample", {MISMATCHED_KL}, True, True),  # in-batch KL rows stay live
    ("pmpo", "sample", set(), True, False),
    ("pmpo", "exact", {EXACT_KL}, False, True),  # full distributions are not per-row numbers
])
def test_the_registry_says_what_each_objective_needs_for_its_settings(name, kl_estimator, inputs, cacheable,
                                                                     live_with_cache):
    objective, params = get_objective(name), ObjectiveConfig(name=name, kl_estimator=kl_estimator)
    assert objective.inputs(params) == inputs
    assert objective.needs_full_distributions(params) == (EXACT_KL in inputs)
    assert objective.reference_cache(params)[0] == cacheable
    assert objective.needs_live_reference(params, cached=cacheable) == live_with_cache
    assert objective.needs_live_reference(params, cached=False) == objective.needs_reference


def full_unpaired() -> UnpairedLogps:
    return UnpairedLogps(
        logps=torch.tensor([-5.0, -6.0, -3.0, -2.0], dtype=torch.float64),
        tokens=torch.tensor([3, 4, 2, 2]),
        accepted=torch.tensor([True, False, False, True]),
        ref_logps=torch.tensor([-5.5, -6.0, -2.0, -2.5], dtype=torch.float64),
        kl_logps=torch.tensor([-4.0, -5.0, -6.0, -7.0], dtype=torch.float64),
        ref_kl_logps=torch.tensor([-4.5, -5.0, -6.2, -7.3], dtype=torch.float64),
        exact_kl=torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
    )


@pytest.mark.parametrize("name", PAIRED + UNPAIRED)
def test_declared_metrics_are_reported_as_detached_scalars(name):
    logps = paired() if name in PAIRED else full_unpaired()
    out = run(name, logps, beta=0.1, **({"label_smoothing": 1e-3} if name == "exo_pair" else {}))
    assert set(out.metrics) == set(get_objective(name).metrics) - {"loss"}
    for value in out.metrics.values():
        assert value.dim() == 0 and not value.requires_grad and math.isfinite(float(value))
    assert out.losses.shape == (len(logps.logps if name in UNPAIRED else logps.chosen),)


@pytest.mark.parametrize("name", ["simpo", "orpo"])
def test_reference_free_objectives_ignore_reference(name):
    with_ref = run(name, paired(), beta=0.1)
    without = run(name, paired(ref_chosen=None, ref_rejected=None), beta=0.1)
    assert torch.equal(with_ref.losses, without.losses)


# ---------------------------------------------------------------------------------------------
# Paired objectives: hand-computed values


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_values(label_smoothing):
    beta, ls = 0.1, label_smoothing
    chosen_rewards, rejected_rewards = dpo_rewards(beta)
    expected = [
        -(1 - ls) * logsigmoid(c - r) - ls * logsigmoid(r - c) for c, r in zip(chosen_rewards, rejected_rewards)
    ]
    out = run("dpo", paired(), beta=beta, label_smoothing=ls)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    assert close(out.loss, mean(expected))
    assert_reward_metrics(out.metrics, chosen_rewards, rejected_rewards, CHOSEN, REJECTED)
    # rewards 0.05 > -0.1 but 0.0 < 0.05: one pair in two is ranked right.
    assert close(out.metrics["rewards/accuracies"], 0.5)


def test_reward_accuracy_counts_ties_as_wrong():
    out = run("dpo", paired(chosen=REF_CHOSEN, rejected=REF_REJECTED), beta=0.1)
    assert float(out.metrics["rewards/accuracies"]) == 0.0
    assert close(out.loss, math.log(2.0))


def test_ipo_uses_length_averaged_log_ratios():
    beta = 0.1
    expected = [
        ((c - rc) / nc - (r - rr) / nr - 1 / (2 * beta)) ** 2
        for c, rc, nc, r, rr, nr in zip(CHOSEN, REF_CHOSEN, CHOSEN_TOKENS, REJECTED, REF_REJECTED, REJECTED_TOKENS)
    ]
    out = run("ipo", paired(), beta=beta)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    # TRL's reward metrics for IPO stay beta * *summed* log-ratios.
    assert_reward_metrics(out.metrics, *dpo_rewards(beta), CHOSEN, REJECTED)


def test_hinge_values():
    beta = 2.0
    chosen_rewards, rejected_rewards = dpo_rewards(beta)
    expected = [max(0.0, 1 - (c - r)) for c, r in zip(chosen_rewards, rejected_rewards)]
    # margins 3.0 (beyond the hinge: loss 0) and -1.0 (loss 2)
    assert expected == [0.0, 2.0]
    out = run("hinge", paired(), beta=beta)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    assert_reward_metrics(out.metrics, chosen_rewards, rejected_rewards, CHOSEN, REJECTED)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_robust_values(label_smoothing):
    beta, eps = 0.5, label_smoothing
    chosen_rewards, rejected_rewards = dpo_rewards(beta)
    expected = [
        (-(1 - eps) * logsigmoid(c - r) + eps * logsigmoid(r - c)) / (1 - 2 * eps)
        for c, r in zip(chosen_rewards, rejected_rewards)
    ]
    out = run("robust", paired(), beta=beta, label_smoothing=eps)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    assert_reward_metrics(out.metrics, chosen_rewards, rejected_rewards, CHOSEN, REJECTED)


def test_robust_without_flips_is_dpo():
    assert torch.allclose(run("robust", paired(), beta=0.3).losses, run("dpo", paired(), beta=0.3).losses)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_simpo_values(label_smoothing):
    beta, gamma, ls = 2.0, 0.5, label_smoothing
    logits = [beta * (c - r) - gamma for c, r in zip(CHOSEN_AVG, REJECTED_AVG)]
    expected = [-(1 - ls) * logsigmoid(x) - ls * logsigmoid(-x) for x in logits]
    out = run("simpo", paired(), beta=beta, gamma=gamma, label_smoothing=ls)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    # TRL's CPO trainer logs length-averaged log-probs, and rewards from them.
    assert_reward_metrics(
        out.metrics, [beta * c for c in CHOSEN_AVG], [beta * r for r in REJECTED_AVG], CHOSEN_AVG, REJECTED_AVG
    )


def test_simpo_gamma_is_an_absolute_margin():
    # Equal averages: the loss is -log sigmoid(-gamma) whatever beta is.
    same = paired(chosen=[-3.0, -4.0], rejected=[-3.0, -4.0], chosen_tokens=[3, 4], rejected_tokens=[3, 4])
    for beta in (0.1, 2.0):
        assert close(run("simpo", same, beta=beta, gamma=0.7).loss, -logsigmoid(-0.7))


def log1mexp(x: float) -> float:
    return math.log(1.0 - math.exp(x))


def test_orpo_values():
    beta = 0.25
    log_odds = [(c - r) - (log1mexp(c) - log1mexp(r)) for c, r in zip(CHOSEN_AVG, REJECTED_AVG)]
    nll = -sum(CHOSEN) / sum(CHOSEN_TOKENS)  # token-level mean over the batch, as CrossEntropyLoss
    expected_loss = nll - beta * mean(logsigmoid(x) for x in log_odds)

    out = run("orpo", paired(), beta=beta)
    assert close(out.loss, expected_loss)
    assert close(out.metrics["nll_loss"], nll)
    # TRL's names: log_odds_ratio is the mean log-sigmoid, log_odds_chosen the mean log odds ratio.
    assert close(out.metrics["log_odds_ratio"], mean(logsigmoid(x) for x in log_odds))
    assert close(out.metrics["log_odds_chosen"], mean(log_odds))
    assert_reward_metrics(
        out.metrics, [beta * c for c in CHOSEN_AVG], [beta * r for r in REJECTED_AVG], CHOSEN_AVG, REJECTED_AVG
    )


# TRL's CPO/ORPO losses are methods of their trainers that only read a few attributes: a
# stand-in ``self`` runs them on our inputs without building a trainer.


def trl_self(**attributes) -> SimpleNamespace:
    return SimpleNamespace(accelerator=SimpleNamespace(device="cpu"), **attributes)


def test_simpo_matches_trl_cpo_loss():
    trl_cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    beta, gamma, ls = 2.0, 0.5, 0.1
    fake = trl_self(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta, label_smoothing=ls)
    logps = paired()
    averages = (logps.chosen / logps.chosen_tokens, logps.rejected / logps.rejected_tokens)
    losses, chosen_rewards, rejected_rewards = trl_cpo.CPOTrainer.cpo_loss(fake, *averages)
    out = run("simpo", logps, beta=beta, gamma=gamma, label_smoothing=ls)
    assert torch.allclose(out.losses, losses)
    assert close(out.metrics["rewards/chosen"], float(chosen_rewards.mean()))
    assert close(out.metrics["rewards/rejected"], float(rejected_rewards.mean()))


def test_orpo_matches_trl_odds_ratio_loss():
    trl_orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    beta = 0.25
    logps = paired()
    averages = (logps.chosen / logps.chosen_tokens, logps.rejected / logps.rejected_tokens)
    trl_losses, _, _, log_odds_ratio, log_odds_chosen = trl_orpo.ORPOTrainer.odds_ratio_loss(
        trl_self(beta=beta), *averages
    )
    nll = -logps.chosen.sum() / logps.chosen_tokens.sum()
    out = run("orpo", logps, beta=beta)
    assert torch.allclose(out.loss.float(), (nll - trl_losses.mean()).float())
    assert torch.allclose(out.metrics["log_odds_ratio"], log_odds_ratio.float())
    assert torch.allclose(out.metrics["log_odds_chosen"], log_odds_chosen.float())


# ---------------------------------------------------------------------------------------------
# KTO


KTO_LOGPS = [-5.0, -6.0, -3.0, -2.0]
KTO_REF = [-5.5, -6.0, -2.0, -2.5]
KTO_ACCEPTED = [True, False, False, True]


def kto_expected(beta, kl, desirable, undesirable):
    out = []
    for lp, ref, acc in zip(KTO_LOGPS, KTO_REF, KTO_ACCEPTED):
        r = lp - ref
        out.append(desirable * (1 - sigmoid(beta * (r - kl))) if acc else undesirable * (1 - sigmoid(beta * (kl - r))))
    return out


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.5, 0.8)])
def test_kto_values(weights):
    beta = 0.5
    desirable, undesirable = weights
    logps = full_unpaired()
    kl = mean([0.5, 0.0, 0.2, 0.3])  # kl_logps - ref_kl_logps, row by row
    expected = kto_expected(beta, kl, desirable, undesirable)
    out = run("kto", logps, beta=beta, desirable_weight=desirable, undesirable_weight=undesirable)
    assert all(close(got, want) for got, want in zip(out.losses, expected))
    assert close(out.loss, mean(expected))
    assert close(out.metrics["kl"], kl)
    chosen_reward, rejected_reward = beta * mean([0.5, 0.5]), beta * mean([0.0, -1.0])  # rows 0,3 | 1,2
    expected_metrics = {"rewards/chosen": chosen_reward, "rewards/rejected": rejected_reward,
                        "rewards/margins": chosen_reward - rejected_reward,
                        "logps/chosen": mean([-5.0, -2.0]), "logps/rejected": mean([-6.0, -3.0])}
    assert all(close(out.metrics[k], v) for k, v in expected_metrics.items())


def test_kto_kl_baseline_is_clamped_at_zero():
    logps = full_unpaired()
    logps.ref_kl_logps = torch.tensor([-4.5, -5.0, -6.2, -6.0], dtype=torch.float64)  # mean diff -0.075
    out = run("kto", logps, beta=0.5)
    assert float(out.metrics["kl"]) == 0.0
    assert all(close(got, want) for got, want in zip(out.losses, kto_expected(0.5, 0.0, 1.0, 1.0)))


def test_kto_all_accepted_batch_reports_nan_for_the_empty_set():
    # Same metric names in every batch (DDP ranks all-reduce one vector); NaN marks "no rows".
    logps = full_unpaired()
    logps.accepted = torch.ones(4, dtype=torch.bool)
    out = run("kto", logps, beta=0.5)
    assert set(out.metrics) == set(get_objective("kto").metrics) - {"loss"}
    assert torch.isfinite(out.losses).all()
    assert close(out.metrics["logps/chosen"], mean(KTO_LOGPS))
    for name in ("rewards/rejected", "logps/rejected", "rewards/margins"):
        assert math.isnan(float(out.metrics[name]))


def test_empty_set_nan_is_skipped_by_the_metric_accumulator():
    from sweep.engine.metrics import MetricAccumulator

    mixed = full_unpaired()
    only_accepted = full_unpaired()
    only_accepted.accepted = torch.ones(4, dtype=torch.bool)
    acc = MetricAccumulator()
    acc.add(run("kto", mixed, beta=0.5).metrics, weight=1.0)
    acc.add(run("kto", only_accepted, beta=0.5).metrics, weight=1.0)
    reduced = acc.reduce()
    assert math.isclose(reduced["logps/rejected"], mean([-6.0, -3.0]), rel_tol=1e-6)
    assert math.isclose(reduced["logps/chosen"], mean([mean([-5.0, -2.0]), mean(KTO_LOGPS)]), rel_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# PMPO

# One accepted row against four rejected ones: per-set expectations differ from a batch mean.
PMPO_LOGPS = [-2.0, -4.0, -6.0, -8.0, -10.0]
PMPO_ACCEPTED = [True, False, False, False, False]
PMPO_REF = [-2.5, -4.0, -5.0, -8.5, -9.0]


def pmpo_logps(accepted=PMPO_ACCEPTED, **overrides) -> UnpairedLogps:
    fields = dict(logps=torch.tensor(PMPO_LOGPS, dtype=torch.float64), tokens=torch.tensor([2, 3, 4, 5, 6]),
                  accepted=torch.tensor(accepted), ref_logps=torch.tensor(PMPO_REF, dtype=torch.float64))
    return UnpairedLogps(**{**fields, **overrides})


def k3(logp: float, ref: float) -> float:
    d = logp - ref
    return math.exp(d) - 1 - d


def test_pmpo_expectations_are_per_set():
    alpha = 0.7
    accepted_mean = mean(lp for lp, a in zip(PMPO_LOGPS, PMPO_ACCEPTED) if a)  # -2
    rejected_mean = mean(lp for lp, a in zip(PMPO_LOGPS, PMPO_ACCEPTED) if not a)  # -7
    objective = alpha * accepted_mean - (1 - alpha) * rejected_mean  # -1.4 + 2.1 = 0.7
    out = run("pmpo", pmpo_logps(), beta=0.0, alpha=alpha)
    assert close(out.loss, -objective)
    assert close(out.loss, -0.7)
    # A batch-mean weighting (each row 1/B) would give -(0.7*-2 - 0.3*-28)/5 = -1.4: not this.
    assert not close(out.loss, -(alpha * -2.0 - (1 - alpha) * -28.0) / 5)
    assert close(out.metrics["logps/accepted"], accepted_mean)
    assert close(out.metrics["logps/rejected"], rejected_mean)
    assert close(out.metrics["logps/margins"], 5.0)  # -2 - (-7)


def test_pmpo_sample_kl_values():
    alpha, beta = 0.5, 0.2
    kl = mean(k3(lp, ref) for lp, ref in zip(PMPO_LOGPS, PMPO_REF))
    objective = alpha * -2.0 - (1 - alpha) * -7.0 - beta * kl
    out = run("pmpo", pmpo_logps(), beta=beta, alpha=alpha, kl_estimator="sample")
    assert close(out.loss, -objective)
    assert close(out.metrics["kl"], kl)


def test_pmpo_exact_kl_values():
    alpha, beta = 0.5, 0.2
    exact = [0.1, 0.2, 0.3, 0.4, 0.5]
    logps = pmpo_logps(ref_logps=None, exact_kl=torch.tensor(exact, dtype=torch.float64))
    out = run("pmpo", logps, beta=beta, alpha=alpha, kl_estimator="exact")
    assert close(out.loss, -(alpha * -2.0 - (1 - alpha) * -7.0 - beta * mean(exact)))
    assert close(out.metrics["kl"], 0.3)


def test_pmpo_sample_kl_is_zero_when_policy_is_reference():
    logps = pmpo_logps(ref_logps=torch.tensor(PMPO_LOGPS, dtype=torch.float64))
    out = run("pmpo", logps, beta=0.5, alpha=0.5)
    assert float(out.metrics["kl"]) == 0.0
    assert close(out.loss, run("pmpo", pmpo_logps(ref_logps=None), beta=0.0, alpha=0.5).loss)


@pytest.mark.parametrize("shift", [-3.0, -0.1, 0.1, 3.0])
def test_pmpo_sample_kl_is_positive_otherwise(shift):
    # k3 is >= 0 whichever way the policy moved, unlike the plain log-ratio estimator.
    logps = pmpo_logps(ref_logps=torch.tensor([lp - shift for lp in PMPO_LOGPS], dtype=torch.float64))
    kl = run("pmpo", logps, beta=0.5, alpha=0.5).metrics["kl"]
    assert float(kl) > 0.0
    assert close(kl, math.exp(shift) - 1 - shift)


def test_pmpo_without_kl_needs_no_reference():
    out = run("pmpo", pmpo_logps(ref_logps=None), beta=0.0, alpha=0.5)
    assert math.isnan(float(out.metrics["kl"]))
    assert close(out.loss, -(0.5 * -2.0 - 0.5 * -7.0))


@pytest.mark.parametrize("accepted, present, absent", [
    ([True] * 5, "logps/accepted", "logps/rejected"),
    ([False] * 5, "logps/rejected", "logps/accepted"),
])
def test_pmpo_single_set_batch(accepted, present, absent):
    alpha = 0.3
    out = run("pmpo", pmpo_logps(accepted=accepted), beta=0.0, alpha=alpha)
    assert set(out.metrics) == PMPO_METRICS
    assert close(out.metrics[present], mean(PMPO_LOGPS)) and math.isnan(float(out.metrics[absent]))
    assert math.isnan(float(out.metrics["logps/margins"]))  # no margin without both sets
    assert torch.isfinite(out.losses).all()
    sign_weight = -alpha if accepted[0] else (1 - alpha)
    assert close(out.loss, sign_weight * mean(PMPO_LOGPS))
