"""A study's report as data: every trial (state, parameters, final and best value of each
metric, steps, wall time, what stopped it, its MLflow run, Optuna number and checkpoint),
Optuna's parameter importances for the sweep metric, sentences about where the best trials'
values lie, the Pareto front, the champion and the reward-vs-KL frontier. As JSON (the REST
answer, report.json) or CSV (one row per trial). `report_files` writes it out with plots."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sweep.config.redact import mask
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.storage.databases import optuna_storage
from sweep.storage.record import StudyRecord
from sweep.study.optuna_search import MLFLOW_RUN_ATTR
from sweep.study.report_insights import DEFAULT_EVALUATOR, Ranked, finite, observations, param_importances, ranked
from sweep.study.report_plots import frontier_data
from sweep.study.selection import champion, pareto_front
from sweep.study.trials import TrialRow, join_trials, trial_curves

# Metrics whose best value over a run has a meaning, beyond the sweep's own objectives (their
# goals come from the config): TRL's names with and without `eval/`, and the generation ones.
GOALS = {"loss": "minimize", "nll_loss": "minimize", "rewards/accuracies": "maximize", "rewards/margins": "maximize",
         "gen/reward": "maximize", "gen/win_rate": "maximize", "gen/kl": "minimize"}
STOPPED_BY = {"failed": "failure", "interrupted": "interrupted"}  # and "stopped": the early_terminate type
TRIAL_COLUMNS = ("rank", "number", "trial_id", "state", "stopped_by")
TAIL_COLUMNS = ("steps", "max_steps", "wall_time_s", "mlflow_run_id", "checkpoint_path", "error")
Progress = Callable[[str], None]


def goal_of(name: str, cfg: PrefsweepConfig) -> str | None:
    """Which way a metric is better, when it has a way: the sweep's say first."""
    rule = cfg.sweep.champion
    if rule and rule.by == name and rule.goal:
        return rule.goal
    return cfg.sweep.goal_of(name) or GOALS.get(name.removeprefix("eval/"))


@dataclass
class StudyReport:
    data: dict[str, Any]  # what report.json and GET /studies/{id}/report hold
    rows: list[TrialRow] = field(default_factory=list)  # Tune's rows (what selection reads)
    optuna_trials: list = field(default_factory=list)
    curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # trial id -> metric -> points


def _quiet(_: str) -> None:
    pass


def _optuna_trials(record: StudyRecord) -> list:
    store = optuna_storage(record.optuna_url)
    try:
        study_id = store.get_study_id_from_name(record.name)
    except KeyError:
        return []  # no trial asked for yet
    return store.get_all_trials(study_id, deepcopy=False)



def _seconds(started: str | None, completed: str | None) -> float | None:
    if not started or not completed:
        return None
    return round((datetime.fromisoformat(completed) - datetime.fromisoformat(started)).total_seconds(), 1)


def _best(points: list[list[float]], goal: str | None) -> float | None:
    values = [v for _, v in points if finite(v) is not None]
    if not values or goal is None:
        return None
    return max(values) if goal == "maximize" else min(values)


def categorical_keys(cfg: PrefsweepConfig) -> set[str]:
    """Keys every spec of which is a list of values (or a constant): named, not ranged."""
    kinds: dict[str, set[str]] = {}
    for swept in walk(cfg.sweep.parameters):
        kinds.setdefault(swept.key, set()).add(swept.spec.kind)
    return {k for k, found in kinds.items() if found <= {"categorical", "constant"}}


def build_report(record: StudyRecord, rows: Sequence[TrialRow], progress: Progress = _quiet,
                 evaluator: str = DEFAULT_EVALUATOR) -> StudyReport:
    """The report of a study from its stores: Tune's `rows` (sweep.study.trials.trial_rows),
    Optuna's trials, MLflow's step metrics; `evaluator`: Optuna's importance evaluator."""
    cfg = record.cfg
    metric, goal = cfg.sweep.metric.name, cfg.sweep.metric.goal
    progress("reading the trials from Optuna")
    optuna_trials = _optuna_trials(record)
    joined = join_trials(optuna_trials, list(rows), record.state)
    run_ids = {t.number: t.user_attrs.get(MLFLOW_RUN_ATTR) for t in optuna_trials}
    by_id = {r.trial_id: r for r in rows}
    metrics = sorted({m for r in rows for m in r.metrics} | {metric})
    progress(f"reading the step metrics of {len(rows)} trials from MLflow")
    curves = trial_curves(record, sorted({m for m in metrics if goal_of(m, cfg)} | {"loss"}))
    early = cfg.sweep.early_terminate.type if cfg.sweep.early_terminate else "scheduler"
    trials = []
    for t in joined:
        row = by_id.get(t["trial_id"])
        final = {m: finite(v) for m, v in (row.metrics if row else {}).items()}
        if metric not in final and finite(t["value"]) is not None:
            final[metric] = float(t["value"])  # a trial only Optuna knows of
        history = curves.get(t["trial_id"] or "", {})
        best = {m: _best(history.get(m, []), goal_of(m, cfg)) for m in final if goal_of(m, cfg)}
        best = {m: v if v is not None else final[m] for m, v in best.items()}
        trials.append({
            "rank": None, "number": t["number"], "trial_id": t["trial_id"], "state": t["state"],
            "stopped_by": {**STOPPED_BY, "stopped": early}.get(t["state"]), "params": t["params"],
            "value": final.get(metric), "final": final, "best": best, "steps": t["step"],
            "max_steps": row.max_steps if row else None, "wall_time_s": _seconds(t["started"], t["completed"]),
            "mlflow_run_id": run_ids.get(t["number"]), "checkpoint_path": t["checkpoint_path"], "error": t["error"],
        })
    for rank, t in enumerate(ranked([t for t in trials if t["value"] is not None], goal, lambda t: t["value"]), 1):
        t["rank"] = rank
    progress(f"parameter importances for {metric} (Optuna's {evaluator})")
    importances = param_importances(optuna_trials, metric, goal, evaluator)
    sentences = observations([Ranked(f"#{t['number']}", t["params"], t["value"]) for t in trials
                              if t["value"] is not None], metric, goal, categorical_keys(cfg))
    best = champion(rows, cfg.sweep)
    data = mask({  # error texts and checkpoint URIs may carry a URL's password
        "study": record.name, "state": record.state, "generated_at": datetime.now(timezone.utc).isoformat(),
        "metric": cfg.sweep.metric.model_dump(), "objectives": [m.model_dump() for m in cfg.sweep.objectives],
        "champion": best.trial_id if best else None,
        "pareto_front": [r.trial_id for r in pareto_front(rows, cfg.sweep.objectives)] if cfg.sweep.metrics else [],
        "columns": columns(trials), "trials": trials, "importances": importances, "observations": sentences,
        "frontier": frontier_data(rows, cfg.sweep),
    })
    return StudyReport(data=data, rows=list(rows), optuna_trials=optuna_trials, curves=curves)


def columns(trials: Sequence[dict[str, Any]]) -> list[str]:
    """The CSV's header: the trial's identity, each parameter, each metric's final then best
    value, then steps, time and links."""
    params = sorted({p for t in trials for p in t["params"]})
    finals = sorted({m for t in trials for m in t["final"]})
    bests = sorted({m for t in trials for m in t["best"]})
    return [*TRIAL_COLUMNS, *(f"param.{p}" for p in params), *(f"final.{m}" for m in finals),
            *(f"best.{m}" for m in bests), *TAIL_COLUMNS]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def report_csv(data: dict[str, Any]) -> str:
    """One row per trial, the columns of `data['columns']`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(data["columns"])
    for t in data["trials"]:
        flat = {**{k: t[k] for k in (*TRIAL_COLUMNS, *TAIL_COLUMNS)},
                **{f"param.{k}": v for k, v in t["params"].items()},
                **{f"final.{k}": v for k, v in t["final"].items()}, **{f"best.{k}": v for k, v in t["best"].items()}}
        writer.writerow([_cell(flat.get(c)) for c in data["columns"]])
    return out.getvalue()
