"""Reading a study's trials back: Tune's experiment state on storage (trial rows, the best),
joined with Optuna's trials, and each trial's step curves from MLflow."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep import tracking
from sweep.config.loading import config_with
from sweep.config.schema import PrefsweepConfig
from sweep.storage.files import join, read_text
from sweep.storage.record import StudyRecord, study_dir
from sweep.study.search_space import PARAMS_ATTR

ENDED_STATES = ("finished", "stopped", "failed")  # a trial in one of these will not run again
STUDY_ENDED = ("interrupted", "finished", "failed")  # a study in one of these has no running trial


def evaluations_per_trial(cfg: PrefsweepConfig) -> int:
    """Reports a full trial makes: every eval_every steps plus the last step."""
    steps, every = cfg.train.max_steps, cfg.train.eval_every
    return steps // every + (1 if steps % every else 0)



@dataclass
class TrialRow:
    trial_id: str
    state: str  # pending | running | finished | stopped (early, by ASHA) | failed | interrupted
    params: dict[str, Any]
    value: float | None
    evaluations: int
    expected_evaluations: int
    step: int
    max_steps: int
    checkpoint_path: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_config(cfg: PrefsweepConfig, params: dict[str, Any]) -> PrefsweepConfig:
    """The study config with a trial's sampled values set (the study's own if they no longer fit)."""
    try:
        return config_with(cfg, params)
    except ValueError:  # params of a config version that no longer validates
        return cfg


def _error_text(trial) -> str | None:
    # The copy under the trial's storage dir, not Trial.error_file: that one lives in the
    # driver's Ray session dir, which `status` (often run with no Ray at all) does not have.
    name = trial.run_metadata.error_filename
    if not name or not trial.path:
        return None
    text = read_text(join(trial.path, name))
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-3:])[-2000:]


def trial_rows(record: StudyRecord) -> list[TrialRow]:
    from ray.tune import ExperimentAnalysis

    cfg = record.cfg
    try:
        analysis = ExperimentAnalysis(study_dir(cfg.resolved_storage(), record.name))
    except (ValueError, FileNotFoundError, OSError):
        return []  # no trial has started yet
    return [row_from_trial(trial, cfg, record.state, _error_text(trial) if trial.status == "ERROR" else None)
            for trial in analysis.trials]


TUNE_STATES = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "pending", "ERROR": "failed"}
SUMMARY_METRICS = ("loss", "tokens_per_second")


def row_from_trial(trial, cfg: PrefsweepConfig, study_state: str, error: str | None = None) -> TrialRow:
    """One Tune trial (its id, status, config and last result) as a row of the study."""
    last = trial.last_result or {}
    params = dict(trial.config or {})
    trial_cfg = trial_config(cfg, params)
    step = int(last.get("step", 0) or 0)
    state = TUNE_STATES.get(trial.status, "finished")
    # The step reached, not the count of reports, tells a trial ASHA stopped from one that
    # ran to the end: a trial resumed from a checkpoint reports fewer times.
    if state == "finished" and step < trial_cfg.train.max_steps:
        state = "stopped"
    if state == "running" and study_state in STUDY_ENDED:
        state = "interrupted"
    value = last.get(cfg.sweep.metric.name)
    return TrialRow(
        trial_id=trial.trial_id, state=state, params=params, value=_finite(value),
        evaluations=int(last.get("training_iteration", 0) or 0), expected_evaluations=evaluations_per_trial(trial_cfg),
        step=step, max_steps=trial_cfg.train.max_steps, checkpoint_path=last.get("checkpoint_path"),
        metrics={k: float(v) for k, v in last.items()
                 if isinstance(v, (int, float)) and ("/" in k or k in SUMMARY_METRICS)},
        error=error if state == "failed" else None,
    )


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def first_value(trial) -> float | None:
    """An Optuna trial's value of the first sweep metric; `trial.value` raises for a study
    with several (sweep.metrics)."""
    return trial.values[0] if trial.values else None


def sort_rows(rows: list[TrialRow], cfg: PrefsweepConfig) -> list[TrialRow]:
    sign = -1 if cfg.sweep.metric.goal == "maximize" else 1
    return sorted(rows, key=lambda r: (r.value is None, sign * (r.value or 0.0)))


OPTUNA_STATES = {"RUNNING": "running", "COMPLETE": "finished", "PRUNED": "stopped", "FAIL": "failed",
                 "WAITING": "pending"}


def join_trials(optuna_trials: list, tune_rows: list[TrialRow], study_state: str) -> list[dict[str, Any]]:
    """Optuna's trials (number, state, value, intermediate values, times) joined with what Tune
    knows of each (trial id, stopped by ASHA, step, checkpoint, metrics, error)."""
    used: set[str] = set()
    trials = []
    for t in optuna_trials:
        # Tune's config holds the Optuna params plus the sweep's constants; the n-th ask
        # is the n-th Tune trial, so take the first unclaimed row whose params agree.
        sampled = t.user_attrs.get(PARAMS_ATTR, t.params)
        row = next((r for r in tune_rows if r.trial_id not in used
                    and all(r.params.get(k) == v for k, v in sampled.items())), None)
        if row is not None:
            used.add(row.trial_id)
        state = OPTUNA_STATES.get(t.state.name, t.state.name.lower())
        if row is not None and not (row.state == "pending" and state != "pending"):
            state = row.state  # Tune knows more (stopped by ASHA), but saves its state less often
        if state in ("running", "pending") and study_state in STUDY_ENDED:
            state = "interrupted"
        value = first_value(t)
        value = value if value is not None else (row.value if row else None)
        trials.append({
            "number": t.number, "trial_id": row.trial_id if row else None, "state": state,
            "params": dict(row.params) if row else dict(sampled), "value": value,
            "intermediate_values": [[int(s), float(v)] for s, v in sorted(t.intermediate_values.items())],
            "evaluations": row.evaluations if row else len(t.intermediate_values),
            "expected_evaluations": row.expected_evaluations if row else None,
            "step": row.step if row else None, "checkpoint_path": row.checkpoint_path if row else None,
            "metrics": row.metrics if row else {}, "error": row.error if row else None,
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "curves": {},
        })
    return trials


def trial_curves(record: StudyRecord, metrics: list[str]) -> dict[str, dict[str, list[list[float]]]]:
    """Step metrics of every trial's MLflow child run: {trial_id: {metric: [[step, value]]}}."""
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
