"""Study-level operations behind both the CLI verbs and the REST routes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.config.loading import config_with
from sweep.storage.databases import optuna_storage
from sweep.storage.record import StudyRecord, load_record
from sweep.study.export import export_checkpoint
from sweep.study.liveness import record_state
from sweep.study.selection import champion, pareto_front, why_no_champion
from sweep.study.trials import ENDED_STATES, TrialRow, first_value, join_trials, sort_rows, trial_curves, trial_rows


def current_record(name: str, storage: str = "runs") -> StudyRecord:
    """The study's record with the state to show: `running` of a driver that is gone (killed,
    its node lost) is `interrupted` (sweep.study.liveness)."""
    record = load_record(name, storage)
    record.state, record.error = record_state(record)
    return record


def study_status(name: str, storage: str = "runs") -> dict[str, Any]:
    record = current_record(name, storage)
    cfg = record.cfg
    rows = sort_rows(trial_rows(record), cfg)
    from sweep.study.search_space import total_trials

    done = sum(r.state in ENDED_STATES for r in rows)
    try:
        total = total_trials(cfg.sweep)
    except ValueError:  # a study recorded before its search space was checked up front
        total = cfg.sweep.num_trials
    best = champion(rows, cfg.sweep)
    front = pareto_front(rows, cfg.sweep.objectives) if cfg.sweep.metrics else []
    return {
        "name": name,
        "state": record.state,
        "metric": cfg.sweep.metric.model_dump(),
        "progress": {"done": done, "total": total},
        "best": best.as_dict() if best else None,
        "objectives": [m.model_dump() for m in cfg.sweep.objectives],
        "pareto_front": [r.trial_id for r in front],
        "trials": [r.as_dict() for r in rows],
        "mlflow": {"tracking_uri": record.tracking_uri, "experiment_id": record.experiment_id,
                   "parent_run_id": record.parent_run_id},
        "optuna": {"url": record.optuna_url, "study_name": name},
        "error": record.error,
    }


class NoUsableTrial(LookupError):
    """A study none of whose trials has both a checkpoint and a value of the sweep metric."""


ENDED_OPTUNA_STATES = ("COMPLETE", "PRUNED", "FAIL")


def study_progress(name: str, storage: str = "runs") -> dict[str, Any]:
    """{progress: {done, total}, best_value} from the study's Optuna storage: what a list of
    studies shows. Cheap on every call: the process's one cached storage per URL re-reads only
    new and unfinished trials. (`study_status` reads Tune's state, which costs a file per trial.)
    ASHA-stopped trials are PRUNED there, with their last value: they count, as in `best`."""
    from sweep.study.search_space import total_trials

    record = load_record(name, storage)
    cfg = record.cfg
    total = total_trials(cfg.sweep)
    store = optuna_storage(record.optuna_url)
    try:
        study_id = store.get_study_id_from_name(name)
    except KeyError:
        return {"progress": {"done": 0, "total": total}, "best_value": None}  # no trial asked for yet
    trials = store.get_all_trials(study_id, deepcopy=False)
    values = [v for t in trials if t.state.name in ("COMPLETE", "PRUNED") and (v := first_value(t)) is not None]
    best = (max if cfg.sweep.metric.goal == "maximize" else min)(values) if values else None
    return {"progress": {"done": sum(t.state.name in ENDED_OPTUNA_STATES for t in trials), "total": total},
            "best_value": best}


def best_trial(name: str, storage: str = "runs") -> tuple[StudyRecord, dict[str, Any]]:
    record = current_record(name, storage)
    rows = trial_rows(record)
    best = champion(rows, record.cfg.sweep)
    if best is None:
        raise NoUsableTrial(f"study {name!r} ({record.state}): {why_no_champion(rows, record.cfg.sweep)} yet")
    return record, best.as_dict()


def export_best(name: str, out_dir: str | Path, storage: str = "runs") -> Path:
    record, best = best_trial(name, storage)
    return export_trial(record, best, out_dir, trial_rows(record))


def export_trial(record: StudyRecord, trial: dict[str, Any], out_dir: str | Path, rows: list[TrialRow]) -> Path:
    """A trial (a TrialRow dict) as an HF model folder whose card summarises the sweep (`rows`)."""
    cfg = config_with(record.cfg, trial["params"])
    return export_checkpoint(trial["checkpoint_path"], out_dir, cfg, trial["metrics"], [r.as_dict() for r in rows])


def study_trials(name: str, storage: str = "runs", curves: list[str] | None = None) -> list[dict[str, Any]]:
    """Every trial of a study: number, params, state, value and intermediate values (one per
    evaluation) from its Optuna storage; Tune's trial id, step, checkpoint and last metrics
    where Tune knows the trial; `curves` (metric -> [[step, value], ...]) from MLflow."""
    import optuna

    try:
        record = current_record(name, storage)
    except FileNotFoundError:
        return []  # the sweep has not started yet
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(record.optuna_url))
    except KeyError:
        return []
    trials = join_trials(study.get_trials(deepcopy=False), trial_rows(record), record.state)
    if curves:
        by_trial = trial_curves(record, curves)
        for trial in trials:
            trial["curves"] = by_trial.get(trial["trial_id"], {})
    return trials
