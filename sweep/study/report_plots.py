"""The report's figures as PNG files (matplotlib, Agg: no display needed): per-step curves of
each trial, parallel coordinates (Optuna's own plot), importances, and the reward-vs-KL
frontier with its Pareto front, which the study's closing also logs on the parent run."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweep.config.search import MetricConfig, SweepConfig
from sweep.study.report_insights import completed_copy, finite
from sweep.study.selection import champion, pareto_front
from sweep.study.trials import TrialRow

KL = "eval/gen/kl"
FRONTIER_Y = ("eval/gen/reward", "eval/gen/win_rate")  # judge reward, win rate against the reference
REFERENCE_Y = {"eval/gen/reward": "eval/gen/ref_reward"}  # where the reference itself sits, when reported
FRONTIER_FILE = "reward_vs_kl.png"
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: a server or a Ray driver has no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def curves_png(curves: dict[str, list[list[float]]], metric: str, path: Path) -> Path:
    """One line per trial: `curves` maps a trial's label to its [[step, value], ...]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for label, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, f"no trial logged {metric}", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} per step")
    ax.grid(alpha=0.3)
    if 0 < drawn <= 20:
        ax.legend(fontsize="small", ncol=2 if drawn > 8 else 1)
    return _save(fig, path)


def importances_png(importances: dict[str, Any], path: Path) -> Path:
    """`importances`: what report_insights.param_importances returns."""
    plt = _pyplot()
    values = importances["values"]
    names = list(values)[::-1]  # most important on top
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [values[n] for n in names], color="#2563eb")
    for i, name in enumerate(names):
        ax.text(values[name], i, f" {values[name]:.2f}", va="center", fontsize="small")
    ax.set(xlabel=f"importance (Optuna's {importances['evaluator']}, sums to 1)", xlim=(0, 1.1),
           title=f"Parameter importances for {importances['metric']}")
    return _save(fig, path)


def parallel_png(optuna_trials: Sequence, metric: str, goal: str, path: Path) -> Path | None:
    """Optuna's parallel-coordinate plot of the trials that reached a value of the sweep metric
    (ASHA-stopped ones included, with their last value). None when fewer than two have."""
    import optuna

    copy = completed_copy(optuna_trials, goal)
    if len(copy.trials) < 2:
        return None
    _pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are marked experimental
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(copy, target_name=metric)
    ax.figure.set_size_inches(max(7, 2.2 * (len(copy.trials[0].params) + 1)), 5)
    return _save(ax.figure, path)



def frontier_axes(rows: Sequence[TrialRow]) -> tuple[str, list[str]] | None:
    """(x, [y, ...]) of the reward-vs-KL frontier when trials reported KL and a judge's reward
    or win rate; None otherwise."""
    def reported(name: str) -> bool:
        return any(name in r.metrics for r in rows)

    ys = [y for y in FRONTIER_Y if reported(y)]
    return (KL, ys) if reported(KL) and ys else None


def frontier_metrics(sweep: SweepConfig, x: str, y: str) -> list[MetricConfig]:
    """The plane's two objectives (goals from the sweep when it names them): y up, KL down."""
    return [MetricConfig(name=y, goal=sweep.goal_of(y) or "maximize"),
            MetricConfig(name=x, goal=sweep.goal_of(x) or "minimize")]


def frontier_data(rows: Sequence[TrialRow], sweep: SweepConfig) -> dict[str, Any] | None:
    """The frontier as data (the page draws it, the PNG below too): every trial with the
    metrics, the Pareto front of each plane (sweep.study.selection), the champion and the
    reference's own reward where the trials report it."""
    axes = frontier_axes(rows)
    if axes is None:
        return None
    x, ys = axes
    names = [x, *ys, *(REFERENCE_Y[y] for y in ys if y in REFERENCE_Y)]
    best = champion(rows, sweep)
    points = [{"trial_id": r.trial_id, "state": r.state, "values": {n: finite(r.metrics.get(n)) for n in names}}
              for r in rows]
    points = [p for p in points if p["values"][x] is not None and any(p["values"][y] is not None for y in ys)]
    reference = {}
    for y in ys:
        if y in REFERENCE_Y:
            refs = [p["values"][REFERENCE_Y[y]] for p in points if p["values"].get(REFERENCE_Y[y]) is not None]
            if refs:
                reference[y] = sum(refs) / len(refs)
        elif y == "eval/gen/win_rate":
            reference[y] = 0.5  # the reference against itself: ties count half
    return {"x": x, "ys": ys, "points": points, "reference": reference,
            "fronts": {y: [r.trial_id for r in pareto_front(rows, frontier_metrics(sweep, x, y))] for y in ys},
            "champion": best.trial_id if best else None}


def frontier_png(rows: Sequence[TrialRow], sweep: SweepConfig, path: Path) -> Path | None:
    """Reward (and/or win rate) against KL to the reference, one point per trial, the Pareto
    front joined and ringed, the champion starred. None when the trials have no such metrics."""
    data = frontier_data(rows, sweep)
    if data is None:
        return None
    plt = _pyplot()
    x, ys = data["x"], data["ys"]
    fig, axes = plt.subplots(1, len(ys), figsize=(6.5 * len(ys), 4.5), squeeze=False)
    for ax, y in zip(axes[0], ys):
        pts = [p for p in data["points"] if p["values"].get(y) is not None]
        front = [p for tid in data["fronts"][y] for p in pts if p["trial_id"] == tid]
        ax.scatter([p["values"][x] for p in pts], [p["values"][y] for p in pts], color="#94a3b8", label="trial")
        front.sort(key=lambda p: p["values"][x])
        ax.plot([p["values"][x] for p in front], [p["values"][y] for p in front], color="#dc2626",
                marker="o", markerfacecolor="none", markersize=10, label="Pareto front")
        for p in pts:
            ax.annotate(p["trial_id"], (p["values"][x], p["values"][y]), fontsize="x-small",
                        xytext=(4, 4), textcoords="offset points")
        star = [p for p in pts if p["trial_id"] == data["champion"]]
        if star:
            ax.scatter([star[0]["values"][x]], [star[0]["values"][y]], marker="*", s=220, color="#d97706",
                       zorder=3, label="champion")
        if y in data["reference"]:
            ax.scatter([0.0], [data["reference"][y]], marker="s", color="#111827", label="reference")
        ax.set(xlabel=f"{x} (KL to the reference)", ylabel=y, title=f"{y.rsplit('/', 1)[-1]} vs KL")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)
