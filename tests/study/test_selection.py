"""The Pareto front and the champion: which trials win, the same for every face."""
from __future__ import annotations

from sweep.config.search import MetricConfig, SweepConfig
from sweep.study.selection import champion, dominates, pareto_front, why_no_champion
from sweep.study.trials import TrialRow

WIN, KL = "eval/gen/win_rate", "eval/gen/kl"


def row(trial_id: str, checkpoint: bool = True, **metrics: float) -> TrialRow:
    named = {k.replace("__", "/"): v for k, v in metrics.items()}
    return TrialRow(trial_id=trial_id, state="finished", params={}, value=None, evaluations=1, expected_evaluations=1,
                    step=10, max_steps=10, checkpoint_path=f"/ckpt/{trial_id}" if checkpoint else None, metrics=named)


def rows():
    # win rate up is good, KL down is good: a dominates d, b and c trade off, e has no checkpoint.
    return [
        row("a", **{"eval__gen__win_rate": 0.80, "eval__gen__kl": 4.0}),
        row("b", **{"eval__gen__win_rate": 0.65, "eval__gen__kl": 1.0}),
        row("c", **{"eval__gen__win_rate": 0.55, "eval__gen__kl": 0.2}),
        row("d", **{"eval__gen__win_rate": 0.60, "eval__gen__kl": 5.0}),
        row("e", checkpoint=False, **{"eval__gen__win_rate": 0.99, "eval__gen__kl": 0.0}),
        row("f", **{"eval__gen__win_rate": float("nan"), "eval__gen__kl": 0.1}),
    ]


OBJECTIVES = [MetricConfig(name=WIN, goal="maximize"), MetricConfig(name=KL, goal="minimize")]


def test_the_front_is_every_trade_off_no_other_trial_beats():
    front = pareto_front(rows(), OBJECTIVES)
    assert [r.trial_id for r in front] == ["a", "b", "c"]  # best first by win rate
    by_id = {r.trial_id: r for r in rows()}
    assert dominates(by_id["a"], by_id["d"], OBJECTIVES) and not dominates(by_id["a"], by_id["b"], OBJECTIVES)
    assert not dominates(by_id["a"], by_id["a"], OBJECTIVES)  # equal is not better


def test_the_champion_obeys_its_constraints():
    sweep = SweepConfig(metrics=OBJECTIVES, champion={"by": WIN, "constraints": {KL: {"max": 2.0}}})
    assert champion(rows(), sweep).trial_id == "b"  # a wins more, but drifts past the bound
    sweep = SweepConfig(metrics=OBJECTIVES, champion={"by": KL, "constraints": {WIN: {"min": 0.5}}})
    assert champion(rows(), sweep).trial_id == "c"  # goal of `by` taken from `metrics`: minimize
    none = SweepConfig(metrics=OBJECTIVES, champion={"constraints": {KL: {"max": 0.05}}})
    assert champion(rows(), none) is None
    assert "meets the champion's constraints (eval/gen/kl <= 0.05)" in why_no_champion(rows(), none)


def test_without_a_rule_the_first_metric_decides_as_before():
    assert champion(rows(), SweepConfig(metric={"name": WIN})).trial_id == "a"
    assert champion(rows(), SweepConfig(metric={"name": KL, "goal": "minimize"})).trial_id == "f"  # its NaN win rate is not read
    assert champion([], SweepConfig()) is None and "no trial reported" in why_no_champion([], SweepConfig())


def test_a_tie_goes_to_the_trial_better_on_the_other_objectives():
    tied = [row("x", **{"eval__gen__win_rate": 0.53, "eval__gen__kl": 0.9}),
            row("y", **{"eval__gen__win_rate": 0.53, "eval__gen__kl": 0.2}),
            row("z", **{"eval__gen__win_rate": 0.53})]
    assert champion(tied, SweepConfig(metrics=OBJECTIVES)).trial_id == "y"
    assert champion(tied[:1] + tied[2:], SweepConfig(metrics=OBJECTIVES)).trial_id == "x"
    assert champion(tied, SweepConfig(metric={"name": WIN})).trial_id == "x"  # one metric: the earlier trial
