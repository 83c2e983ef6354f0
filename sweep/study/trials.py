"""Reading a study's trials back (from Tune's experiment state on storage) and closing a
study: trial states in MLflow, best-trial summary on the parent run, the `champion` model."""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep import tracking
from sweep.storage.reference_store import count_passes
from sweep.config.schema import PrefsweepConfig
from sweep.config.loading import config_with, dump_yaml
from sweep.storage.record import StudyRecord, study_dir
from sweep.storage.files import join, read_text


def evaluations_per_trial(cfg: PrefsweepConfig) -> int:
    """Reports a full trial makes: every eval_every steps plus the last step."""
    steps, every = cfg.train.max_steps, cfg.train.eval_every
    return steps // every + (1 if steps % every else 0)

CHAMPION_ALIAS = "champion"


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


def _trial_config(cfg: PrefsweepConfig, params: dict[str, Any]) -> PrefsweepConfig:
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
    metric = cfg.sweep.metric.name
    try:
        analysis = ExperimentAnalysis(study_dir(cfg.resolved_storage(), record.name))
    except (ValueError, FileNotFoundError, OSError):
        return []  # no trial has started yet
    rows = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        params = {k: v for k, v in (trial.config or {}).items()}
        evaluations = int(last.get("training_iteration", 0) or 0)
        trial_cfg = _trial_config(cfg, params)
        step = int(last.get("step", 0) or 0)
        state = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "pending", "ERROR": "failed"}.get(
            trial.status, "finished"
        )
        # The step reached, not the count of reports, tells a trial ASHA stopped from one that
        # ran to the end: a trial resumed from a checkpoint reports fewer times.
        if state == "finished" and step < trial_cfg.train.max_steps:
            state = "stopped"
        if state == "running" and record.state in ("interrupted", "finished", "failed"):
            state = "interrupted"
        value = last.get(metric)
        rows.append(TrialRow(
            trial_id=trial.trial_id, state=state, params=params,
            value=float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None,
            evaluations=evaluations, expected_evaluations=evaluations_per_trial(trial_cfg), step=step,
            max_steps=trial_cfg.train.max_steps,
            checkpoint_path=last.get("checkpoint_path"),
            metrics={k: float(v) for k, v in last.items()
                     if isinstance(v, (int, float)) and "/" in k or k in ("loss", "tokens_per_second")},
            error=_error_text(trial) if state == "failed" else None,
        ))
    return rows


def sort_rows(rows: list[TrialRow], cfg: PrefsweepConfig) -> list[TrialRow]:
    sign = -1 if cfg.sweep.metric.goal == "maximize" else 1
    return sorted(rows, key=lambda r: (r.value is None, sign * (r.value or 0.0)))


def best_row(rows: list[TrialRow], cfg: PrefsweepConfig) -> TrialRow | None:
    scored = [r for r in rows if r.value is not None and r.checkpoint_path]
    return sort_rows(scored, cfg)[0] if scored else None


def summarize_study(record: StudyRecord) -> StudyRecord:
    cfg = record.cfg
    rows = trial_rows(record)
    uri = record.tracking_uri
    final_status = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED", "interrupted": "KILLED"}
    for row in rows:
        run_id = tracking.find_run(uri, record.experiment_id,
                                   {tracking.PARENT_TAG: record.parent_run_id, tracking.TRIAL_TAG: row.trial_id})
        if run_id is None or row.state not in final_status:
            continue
        tags = {tracking.STATE_TAG: row.state, tracking.EVALUATIONS_TAG: row.evaluations}
        if row.error:
            tags[tracking.ERROR_TAG] = row.error
        tracking.set_tags(uri, run_id, tags)
        tracking.end_run(uri, run_id, final_status[row.state])
    best = best_row(rows, cfg)
    client = tracking.client_for(uri)
    client.log_text(record.parent_run_id, dump_yaml(cfg), "config.yaml")
    counts = {s: sum(r.state == s for r in rows) for s in ("finished", "stopped", "failed")}
    tracking.set_tags(uri, record.parent_run_id, {
        **{f"prefsweep.trials_{k}": v for k, v in counts.items()},
        # The final count: trials that ran passes concurrently may have tagged it out of order.
        tracking.PASSES_TAG: count_passes(study_dir(cfg.resolved_storage(), record.name)),
    })
    if best is not None:
        record.best = best.as_dict()
        tracking.log_metrics(uri, record.parent_run_id,
                             {f"best/{k}": v for k, v in best.metrics.items()})
        tracking.set_tags(uri, record.parent_run_id, {
            tracking.BEST_TRIAL_TAG: best.trial_id, tracking.BEST_CHECKPOINT_TAG: best.checkpoint_path,
            **{f"best.{k}": v for k, v in best.params.items()},
        })
        record.best["registered_version"] = register_champion(record, best)
    record.state = "finished" if best is not None or not rows else "failed"
    if best is None and rows:
        record.error = "no trial reported the sweep metric"
    tracking.end_run(uri, record.parent_run_id, "FINISHED" if record.state == "finished" else "FAILED")
    record.save(cfg.resolved_storage())
    return record


def register_champion(record: StudyRecord, best: TrialRow) -> str | None:
    """Log the best trial's exported model to its child run and register it with the
    `champion` alias, linked to that run."""
    from sweep.study.export import export_checkpoint

    uri = record.tracking_uri
    run_id = tracking.find_run(uri, record.experiment_id,
                               {tracking.PARENT_TAG: record.parent_run_id, tracking.TRIAL_TAG: best.trial_id})
    if run_id is None:
        return None
    client = tracking.client_for(uri)
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(best.checkpoint_path, tmp, config_with(record.cfg, best.params), best.metrics)
        client.log_artifacts(run_id, tmp, "model")
    name = record.name
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"prefsweep study {name}: best trial per sweep")
    artifact_uri = client.get_run(run_id).info.artifact_uri
    version = client.create_model_version(name, source=f"{artifact_uri}/model", run_id=run_id,
                                          tags={tracking.TRIAL_TAG: best.trial_id})
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return str(version.version)
