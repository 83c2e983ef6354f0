"""Closing a study: each trial's final state on its MLflow run, the best trial's summary on
the parent run, and the best checkpoint registered in MLflow as the `champion` model."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sweep import tracking
from sweep.config.loading import config_with, dump_yaml
from sweep.storage.record import StudyRecord, study_dir
from sweep.storage.reference_store import count_passes
from sweep.study.export import export_checkpoint
from sweep.study.report_plots import FRONTIER_FILE, frontier_png
from sweep.study.selection import champion, why_no_champion
from sweep.study.trials import ENDED_STATES, TrialRow, trial_rows

CHAMPION_ALIAS = "champion"
logger = logging.getLogger(__name__)


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
    best = champion(rows, cfg.sweep)
    client = tracking.client_for(uri)
    client.log_text(record.parent_run_id, dump_yaml(cfg), "config.yaml")
    counts = {s: sum(r.state == s for r in rows) for s in ENDED_STATES}
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
        record.best["registered_version"] = register_champion(record, best, rows)
    log_frontier(record, rows)
    record.state = "finished" if best is not None or not rows else "failed"
    if best is None and rows:
        record.error = why_no_champion(rows, cfg.sweep)
    tracking.end_run(uri, record.parent_run_id, "FINISHED" if record.state == "finished" else "FAILED")
    record.save(cfg.resolved_storage())
    return record


def log_frontier(record: StudyRecord, rows: list[TrialRow]) -> None:
    """The reward-vs-KL plot (the report's own) on the parent run, when trials evaluated generations."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = frontier_png(rows, record.cfg.sweep, Path(tmp) / FRONTIER_FILE)
            if path is not None:
                tracking.client_for(record.tracking_uri).log_artifact(record.parent_run_id, str(path))
    except Exception:  # a plot is not worth failing a finished study for
        logger.warning("could not log the reward-vs-KL plot on the parent run", exc_info=True)


def register_champion(record: StudyRecord, best: TrialRow, rows: list[TrialRow]) -> str | None:
    """Log the best trial's exported model to its child run and register it with the
    `champion` alias, linked to that run."""
    uri = record.tracking_uri
    run_id = tracking.find_run(uri, record.experiment_id,
                               {tracking.PARENT_TAG: record.parent_run_id, tracking.TRIAL_TAG: best.trial_id})
    if run_id is None:
        return None
    client = tracking.client_for(uri)
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(best.checkpoint_path, tmp, config_with(record.cfg, best.params), best.metrics,
                          [r.as_dict() for r in rows])
        client.log_artifacts(run_id, tmp, "model")
    name = record.name
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"prefsweep study {name}: best trial per sweep")
    artifact_uri = client.get_run(run_id).info.artifact_uri
    version = client.create_model_version(name, source=f"{artifact_uri}/model", run_id=run_id,
                                          tags={tracking.TRIAL_TAG: best.trial_id})
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return str(version.version)
