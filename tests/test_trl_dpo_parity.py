"""Every loss type of TRL 1.16's DPOTrainer, single and mixed, each f-divergence, WPO and LD-DPO:
our loss and metrics equal TRL's on the same model and batch (rtol 1e-4).

For each case a real DPOTrainer is built offline (see tests/test_trl_parity.py for the set-up) with
its DPOConfig, one batch is taken from its own train dataloader and passed to its own
`compute_loss`; our side runs `sweep.engine.batch_loss.batch_loss` with the objective section the
same settings map to (TRL's loss_type list -> `objective.name`, the rest by the same names).
"""
from __future__ import annotations

import pytest
from trl_support import (  # noqa: F401 - fixtures are found by name
    PAIRS,
    REWARD_METRICS,
    assert_close,
    assert_metrics_match,
    assert_not_degenerate,
    config_kwargs,
    fresh,
    models,
    our_loss,
    our_pair_batch,
    pair_dataset,
    pytestmark,
    rows,
    run_trainer,
    tokenizer,
)

ALL_TYPES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
             "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
F_DIVERGENCE_TYPES = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"]

# Betas per loss type: each loss away from its flat regions on this batch's log-ratios of a few nats.
BETA = {"sigmoid": 0.1, "hinge": 0.5, "ipo": 0.3, "exo_pair": 0.1, "nca_pair": 0.2, "robust": 0.1, "bco_pair": 0.2,
        "sppo_hard": 0.3, "aot": 0.1, "aot_unpaired": 0.1, "apo_zero": 0.2, "apo_down": 0.2, "discopop": 0.1,
        "sft": 0.1, "sigmoid_norm": 2.0}
# label_smoothing where TRL reads it (robust, exo_pair, aot, aot_unpaired); sigmoid ignores it, as ours does.
SMOOTHING = {"robust": 0.2, "exo_pair": 1e-3, "aot": 0.1, "aot_unpaired": 0.1}

CASES: dict[str, dict] = {
    **{t: dict(loss_type=[t], beta=BETA[t], label_smoothing=SMOOTHING.get(t, 0.0)) for t in ALL_TYPES},
    "discopop-tau": dict(loss_type=["discopop"], beta=0.1, discopop_tau=0.5),
    "mpo": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0], beta=0.1),
    "rpo": dict(loss_type=["sigmoid", "sft"], beta=0.1),
    "every-type": dict(loss_type=ALL_TYPES, loss_weights=[0.5 + i / 10 for i in range(len(ALL_TYPES))], beta=0.1,
                       label_smoothing=1e-3),
    "forward-kl": dict(loss_type=["sigmoid"], beta=0.1, f_divergence_type="forward_kl"),
    "js": dict(loss_type=["ipo"], beta=0.3, f_divergence_type="js_divergence"),
    "alpha": dict(loss_type=["hinge"], beta=0.5, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
    "f-every-type": dict(loss_type=F_DIVERGENCE_TYPES, beta=0.2, label_smoothing=0.05,
                         f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.7),
    "wpo": dict(loss_type=["sigmoid"], beta=0.1, use_weighting=True),
    # TRL 1.16 cannot weight sft (WPO multiplies its expanded scalar in place: a RuntimeError), so no sft here.
    "wpo-mixed": dict(loss_type=["apo_zero", "nca_pair", "ipo"], loss_weights=[1.0, 0.5, 0.1], beta=0.3,
                      use_weighting=True),
    "ld": dict(loss_type=["sigmoid"], beta=0.1, ld_alpha=0.5),
    "ld-mixed": dict(loss_type=["sigmoid_norm", "aot", "sft"], beta=1.0, ld_alpha=0.2, label_smoothing=0.05),
    "ld-wpo-js": dict(loss_type=["robust", "discopop"], beta=0.1, ld_alpha=0.7, use_weighting=True, label_smoothing=0.1,
                      f_divergence_type="js_divergence"),
}


def our_settings(trl: dict) -> dict:
    """The objective section for a DPOConfig's settings: loss_type -> name, the rest by their names."""
    settings = {k: v for k, v in trl.items() if k != "loss_type"}
    names = trl["loss_type"]
    settings["name"] = names[0] if len(names) == 1 else names
    return settings


@pytest.fixture(scope="module")
def trl_runs(models, tokenizer, tmp_path_factory):
    """case -> (TRL batch, TRL loss, TRL metrics), one DPOTrainer per case."""
    from trl import DPOConfig, DPOTrainer

    policy, reference = models
    results = {}
    for case, settings in CASES.items():
        args = DPOConfig(**config_kwargs(tmp_path_factory, f"dpo-{case}"), per_device_train_batch_size=len(PAIRS),
                         max_length=None, **settings)
        trainer = DPOTrainer(model=fresh(policy), ref_model=fresh(reference), args=args, train_dataset=pair_dataset(),
                             processing_class=tokenizer)
        results[case] = run_trainer(trainer)
    return results


def test_dpo_batches_hold_the_same_tokens(trl_runs, tokenizer):
    ours = our_pair_batch(PAIRS, tokenizer)
    theirs, _, _ = trl_runs["sigmoid"]
    assert rows(ours["input_ids"], ours["attention_mask"]) == rows(theirs["input_ids"], theirs["attention_mask"])
    assert rows(ours["input_ids"], ours["completion_mask"]) == rows(theirs["input_ids"], theirs["completion_mask"])
    assert ours["attention_mask"].sum(1).unique().numel() > 1  # rows of different lengths: padding happens


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_metrics_equal_trl(trl_runs, models, tokenizer, case):
    _, trl_loss, trl_values = trl_runs[case]
    loss, metrics, losses = our_loss(models, our_pair_batch(PAIRS, tokenizer), **our_settings(CASES[case]))
    assert_not_degenerate(metrics)
    if case == "hinge":  # both sides of the hinge: a pair beyond the margin, others inside it
        assert (losses == 0).any() and (losses > 0).any()
    assert_close("loss", loss, trl_loss)
    assert_metrics_match(metrics, trl_values, REWARD_METRICS)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_our_dpo_is_trl_sigmoid_plus_cdpo(trl_runs, models, tokenizer, label_smoothing):
    """`dpo` at label_smoothing 0 is TRL's sigmoid; above 0 it is cDPO (TRL 1.16 ignores it there)."""
    _, trl_loss, trl_values = trl_runs["sigmoid"]
    loss, metrics, _ = our_loss(models, our_pair_batch(PAIRS, tokenizer), name="dpo", beta=BETA["sigmoid"],
                                label_smoothing=label_smoothing)
    assert_metrics_match(metrics, trl_values, REWARD_METRICS)
    if label_smoothing == 0.0:
        assert_close("loss", loss, trl_loss)
    else:
        assert abs(loss - trl_loss) > 1e-3
