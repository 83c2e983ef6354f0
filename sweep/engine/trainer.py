"""One Ray Train run (TorchTrainer) of the worker loop, shared by `prefsweep train` and
by each sweep trial."""
from __future__ import annotations

import os
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from sweep.config.schema import PrefsweepConfig
from sweep.engine.loop import train_loop_per_worker
from sweep.storage.files import join

HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def build_trainer(
    cfg: PrefsweepConfig,
    data: Any,
    *,
    run_name: str,
    storage_path: str,
    mlflow: dict[str, str] | None = None,
    callbacks: list | None = None,
    ref_cache: Any = None,
    tokens: Any = None,
    scorer: dict[str, str] | None = None,
) -> TorchTrainer:
    """`data` is the loaded PreferenceData or an ObjectRef to it (workers on other nodes
    fetch it from the object store, so nothing depends on the driver's disk); `tokens` the
    study's tokenization of it for this run's setting (`sweep.data.token_rows`), or its
    ObjectRef: the workers then train on it instead of tokenizing `data` themselves.
    `scorer`: the name of the study's scorer actor (sweep.study.scoring); without one, a run
    that evaluates generations loads its own."""
    # Ray Train's controller looks at its workers every 2 s by default: the end of a run (and
    # each report) waits up to that long to be noticed, seconds of idle per trial. A user's own
    # setting wins; the controller reads it from the environment of the process that calls fit.
    os.environ.setdefault(HEALTH_CHECK_INTERVAL, "0.5")
    resources = cfg.resources
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus()  # below 1: trials share a GPU
    loop_config: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "data": data, "tokens": tokens,
                                   "ref_cache": ref_cache, "run_dir": join(storage_path, run_name),
                                   "scorer": scorer}
    if mlflow:
        loop_config.update(tracking_uri=mlflow["tracking_uri"], mlflow_run_id=mlflow["run_id"])
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=cfg.sweep.max_retries),
            # The newest checkpoints: a restarted worker resumes from the latest, and the
            # sweep ranks trials by their last reported metric.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
