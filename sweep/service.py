"""Study-level operations behind both the CLI verbs and the REST routes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.configio import config_with
from sweep.export import export_checkpoint
from sweep.results import best_row, sort_rows, trial_rows
from sweep.study import StudyRecord, load_record


def study_status(name: str, storage: str = "runs") -> dict[str, Any]:
    record = load_record(name, storage)
    cfg = record.cfg
    rows = sort_rows(trial_rows(record), cfg)
    from sweep.search_space import total_trials

    done = sum(r.state in ("finished", "stopped", "failed") for r in rows)
    best = best_row(rows, cfg)
    return {
        "name": name,
        "state": record.state,
        "metric": cfg.sweep.metric.model_dump(),
        "progress": {"done": done, "total": total_trials(cfg.sweep)},
        "best": best.as_dict() if best else None,
        "trials": [r.as_dict() for r in rows],
        "mlflow": {"tracking_uri": record.tracking_uri, "experiment_id": record.experiment_id,
                   "parent_run_id": record.parent_run_id},
        "optuna": {"url": record.optuna_url, "study_name": name},
        "error": record.error,
    }


ENDED_OPTUNA_STATES = ("COMPLETE", "PRUNED", "FAIL")


def study_progress(name: str, storage: str = "runs") -> dict[str, Any]:
    """{progress: {done, total}, best_value} from the study's Optuna storage: what a list of
    studies shows. Cheap on every call: the process's one cached storage per URL re-reads only
    new and unfinished trials. (`study_status` reads Tune's state, which costs a file per trial.)"""
    from sweep.search_space import total_trials
    from sweep.stores import optuna_storage

    record = load_record(name, storage)
    cfg = record.cfg
    total = total_trials(cfg.sweep)
    store = optuna_storage(record.optuna_url)
    try:
        study_id = store.get_study_id_from_name(name)
    except KeyError:
        return {"progress": {"done": 0, "total": total}, "best_value": None}  # no trial asked for yet
    trials = store.get_all_trials(study_id, deepcopy=False)
    values = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    best = (max if cfg.sweep.metric.goal == "maximize" else min)(values) if values else None
    return {"progress": {"done": sum(t.state.name in ENDED_OPTUNA_STATES for t in trials), "total": total},
            "best_value": best}


def best_trial(name: str, storage: str = "runs") -> tuple[StudyRecord, dict[str, Any]]:
    record = load_record(name, storage)
    best = best_row(trial_rows(record), record.cfg)
    if best is None:
        raise LookupError(f"study {name!r} has no trial with a checkpoint and a value of {record.cfg.sweep.metric.name}")
    return record, best.as_dict()


def export_best(name: str, out_dir: str | Path, storage: str = "runs") -> Path:
    record, best = best_trial(name, storage)
    cfg = config_with(record.cfg, best["params"])
    return export_checkpoint(best["checkpoint_path"], out_dir, cfg, best["metrics"])


OPTUNA_STATES = {"RUNNING": "running", "COMPLETE": "finished", "PRUNED": "stopped", "FAIL": "failed",
                 "WAITING": "pending"}


def study_trials(name: str, storage: str = "runs", curves: list[str] | None = None) -> list[dict[str, Any]]:
    """Every trial of a study: number, params, state, value and intermediate values (one per
    evaluation) from its Optuna storage; Tune's trial id, step, checkpoint and last metrics
    where Tune knows the trial; `curves` (metric -> [[step, value], ...]) from MLflow."""
    import optuna

    from sweep.stores import optuna_storage

    try:
        record = load_record(name, storage)
    except FileNotFoundError:
        return []  # the sweep has not started yet
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(record.optuna_url))
    except KeyError:
        return []
    tune_rows = trial_rows(record)
    used: set[str] = set()
    trials = []
    for t in study.get_trials(deepcopy=False):
        # Tune's config holds the Optuna params plus the sweep's constants; the n-th ask
        # is the n-th Tune trial, so take the first unclaimed row whose params agree.
        row = next((r for r in tune_rows if r.trial_id not in used
                    and all(r.params.get(k) == v for k, v in t.params.items())), None)
        if row is not None:
            used.add(row.trial_id)
        state = OPTUNA_STATES.get(t.state.name, t.state.name.lower())
        if row is not None and not (row.state == "pending" and state != "pending"):
            state = row.state  # Tune knows more (stopped by ASHA), but saves its state less often
        if state in ("running", "pending") and record.state in ("interrupted", "failed", "finished"):
            state = "interrupted"
        value = t.value if t.value is not None else (row.value if row else None)
        trials.append({
            "number": t.number, "trial_id": row.trial_id if row else None, "state": state,
            "params": dict(row.params) if row else dict(t.params), "value": value,
            "intermediate_values": [[int(s), float(v)] for s, v in sorted(t.intermediate_values.items())],
            "evaluations": row.evaluations if row else len(t.intermediate_values),
            "expected_evaluations": row.expected_evaluations if row else None,
            "step": row.step if row else None, "checkpoint_path": row.checkpoint_path if row else None,
            "metrics": row.metrics if row else {}, "error": row.error if row else None,
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "curves": {},
        })
    if curves:
        by_trial = trial_curves(record, curves)
        for trial in trials:
            trial["curves"] = by_trial.get(trial["trial_id"], {})
    return trials


def trial_curves(record: StudyRecord, metrics: list[str]) -> dict[str, dict[str, list[list[float]]]]:
    """Step metrics of every trial's MLflow child run: {trial_id: {metric: [[step, value]]}}."""
    from sweep import tracking

    client = tracking.client_for(record.tracking_uri)
    runs = client.search_runs([record.experiment_id],
                              filter_string=f"tags.`{tracking.PARENT_TAG}` = '{record.parent_run_id}'",
                              max_results=1000)
    out: dict[str, dict[str, list[list[float]]]] = {}
    for run in runs:
        trial_id = run.data.tags.get(tracking.TRIAL_TAG)
        if not trial_id:
            continue
        out[trial_id] = {
            m: [[h.step, h.value] for h in sorted(client.get_metric_history(run.info.run_id, m), key=lambda h: h.step)]
            for m in metrics if m in run.data.metrics
        }
    return out


def mark_stopped(name: str, storage: str = "runs", error: str = "stopped") -> None:
    """Record in study.json that a running study was stopped from outside (its driver was
    killed and could not say so): `status` then shows it interrupted and `resume` continues it."""
    try:
        record = load_record(name, storage)
    except FileNotFoundError:
        return
    if record.state == "running":
        record.state, record.error = "interrupted", error
        record.save(record.cfg.resolved_storage())
