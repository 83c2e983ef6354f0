"""Which trials win: the Pareto front over the sweep's metrics and the one `champion`.

Pure functions of trial rows (sweep.study.trials.TrialRow), so `status`, the REST service,
the page, the report and the study's closing all pick the same trials. A trial is a candidate
when it left a checkpoint and reported every metric the choice reads, finite."""
from __future__ import annotations

import math
from collections.abc import Sequence

from sweep.config.search import MetricConfig, SweepConfig
from sweep.study.trials import TrialRow


def _value(row: TrialRow, name: str) -> float | None:
    value = row.metrics.get(name)  # the last report's: every metric the trial reported
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def candidates(rows: Sequence[TrialRow], names: Sequence[str]) -> list[TrialRow]:
    return [r for r in rows if r.checkpoint_path and all(_value(r, n) is not None for n in names)]


def _signed(row: TrialRow, metric: MetricConfig) -> float:
    """Bigger is better, whatever the goal."""
    value = _value(row, metric.name)
    return value if metric.goal == "maximize" else -value


def dominates(a: TrialRow, b: TrialRow, metrics: Sequence[MetricConfig]) -> bool:
    """a is at least as good as b on every metric and better on one."""
    pairs = [(_signed(a, m), _signed(b, m)) for m in metrics]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(rows: Sequence[TrialRow], metrics: Sequence[MetricConfig]) -> list[TrialRow]:
    """The candidates no other candidate dominates, best first by the first metric."""
    pool = candidates(rows, [m.name for m in metrics])
    front = [r for r in pool if not any(dominates(o, r, metrics) for o in pool if o is not r)]
    return sorted(front, key=lambda r: -_signed(r, metrics[0]))


def champion(rows: Sequence[TrialRow], sweep: SweepConfig) -> TrialRow | None:
    """`sweep.champion`: the best by `by` among the candidates meeting every constraint;
    without it, the best by the sweep metric. None when no trial qualifies."""
    rule = sweep.champion
    by = (rule.by if rule and rule.by else None) or sweep.metric.name
    goal = (rule.goal if rule else None) or sweep.goal_of(by) or "maximize"
    constraints = rule.constraints if rule else {}
    pool = [r for r in candidates(rows, [by, *constraints])
            if all(bound.admits(_value(r, name)) for name, bound in constraints.items())]
    if not pool:
        return None
    # Equals on `by` are told apart by the sweep's other objectives in order (a tie on win rate
    # goes to the lower KL), then the earlier trial (max keeps the first).
    order = [MetricConfig(name=by, goal=goal)] + [m for m in sweep.objectives if m.name != by]
    return max(pool, key=lambda r: tuple(_signed(r, m) if _value(r, m.name) is not None else -math.inf
                                         for m in order))


def why_no_champion(rows: Sequence[TrialRow], sweep: SweepConfig) -> str:
    rule = sweep.champion
    by = (rule.by if rule and rule.by else None) or sweep.metric.name
    if rule and rule.constraints and candidates(rows, [by]):
        limits = ", ".join(f"{k} {_describe(b)}" for k, b in rule.constraints.items())
        return f"no trial with a checkpoint meets the champion's constraints ({limits})"
    return f"no trial reported {by} with a checkpoint"


def _describe(bound) -> str:
    parts = ([f">= {bound.min:g}"] if bound.min is not None else []) + ([f"<= {bound.max:g}"] if bound.max is not None else [])
    return " and ".join(parts)
