"""`prefsweep train CONFIG`: one Ray Train run with the config's fixed hyperparameters."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import ray

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.data.loading import load_preference_data
from sweep.data.token_rows import tokenize_rows
from sweep.engine.trainer import build_trainer
from sweep.study.ray_cluster import init_ray
from sweep.study.scoring import check_evaluation


@dataclass
class TrainOutcome:
    metrics: dict[str, float]
    checkpoint_path: str | None
    mlflow_run_id: str
    tracking_uri: str


def run_training(cfg: PrefsweepConfig) -> TrainOutcome:
    objective = cfg.objective.resolved()
    data = load_preference_data(cfg.data, paired=objective.paired, seed=cfg.train.seed)
    check_evaluation(cfg, data)  # the run loads its own scorer (reference + judge) on its workers
    uri = tracking.tracking_uri(cfg)
    experiment_id = tracking.ensure_experiment(cfg, uri)
    run_name = f"{cfg.name}-train-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = tracking.create_run(
        uri, experiment_id, run_name,
        tags={tracking.STUDY_TAG: cfg.name, tracking.KIND_TAG: "train"},
        params=cfg.model_dump(mode="json"),
    )
    init_ray()
    storage = str(Path(cfg.resolved_storage(), cfg.name)) if "://" not in cfg.resolved_storage() \
        else f"{cfg.resolved_storage()}/{cfg.name}"
    # Tokenized once here, not once per DDP worker.
    trainer = build_trainer(cfg, ray.put(data), tokens=ray.put(tokenize_rows(cfg, data)), run_name=run_name,
                            storage_path=storage, mlflow={"tracking_uri": uri, "run_id": run_id})
    try:
        result = trainer.fit()
    except Exception as exc:
        tracking.set_tags(uri, run_id, {tracking.ERROR_TAG: tracking.short_error(exc)})
        tracking.end_run(uri, run_id, "FAILED")
        raise
    checkpoint_path = result.checkpoint.path if result.checkpoint else None
    tracking.set_tags(uri, run_id, {tracking.CHECKPOINT_TAG: checkpoint_path})
    tracking.end_run(uri, run_id, "FINISHED")
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    return TrainOutcome(metrics, checkpoint_path, run_id, uri)
