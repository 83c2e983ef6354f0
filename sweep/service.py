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
