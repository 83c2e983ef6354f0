"""MLflow: one parent run per study, one child run per trial (or one run for `train`).

Everything goes through `MlflowClient` with explicit run ids: the driver, Tune trials and
rank-0 workers are different processes, and the fluent API's global active run would tie
them together wrongly. Step metrics are logged from rank 0 of the workers only.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweep.config.redact import mask, mask_url
from sweep.config.schema import MLFLOW_ARTIFACTS, MLFLOW_DB, PrefsweepConfig

# Every tag name the project writes, in one place.
PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "prefsweep.study"
TRIAL_TAG = "prefsweep.trial_id"
KIND_TAG = "prefsweep.kind"  # study | trial | train
STATE_TAG = "prefsweep.state"  # a trial's: finished | stopped | failed | restarting | interrupted
ERROR_TAG = "prefsweep.error"
EVALUATIONS_TAG = "prefsweep.evaluations"
CHECKPOINT_TAG = "prefsweep.checkpoint"
BEST_TRIAL_TAG = "prefsweep.best_trial"
BEST_CHECKPOINT_TAG = "prefsweep.best_checkpoint"
CACHE_TAG = "prefsweep.reference_cache"  # a trial's: which cache entry it read, or why none
PASSES_TAG = "prefsweep.reference_passes"  # the study's: reference passes run so far
GENERATIONS_TABLE = "eval_generations.json"  # a trial run's table: one row per prompt per evaluation
TOKENIZATIONS_TAG = "prefsweep.tokenizations"  # the study's: tokenizations of its rows so far (one per setting)
STARTUP_TAG = "prefsweep.startup"  # a trial's: when its worker process started, loop began, rows and model came, steps ran
TRIAL_TIMES_TAG = "prefsweep.trial_times"  # a trial's: when its Tune function started and ended
OPTUNA_TRIAL_TAG = "prefsweep.optuna_trial"  # a trial's number in its Optuna study
NODE_TAG, NODES_TAG = "prefsweep.node_id", "prefsweep.nodes"  # rank 0's Ray node, and every attempt's


MAX_ERROR = 4000  # characters of an error kept in tags and study records: the end, where the cause is


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[-MAX_ERROR:]


def tracking_uri(cfg: PrefsweepConfig) -> str:
    explicit = cfg.tracking.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    storage = cfg.resolved_storage()
    if "://" in storage:
        raise ValueError(
            "tracking.mlflow_tracking_uri: storage.path is a URI, so give an MLflow tracking URI "
            "(or set MLFLOW_TRACKING_URI); the SQLite default needs a local directory"
        )
    Path(storage).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{storage}/{MLFLOW_DB}"


_migrated: set[str] = set()


def client_for(uri: str) -> MlflowClient:
    if not uri.startswith("sqlite:///") or uri in _migrated:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    # A new client creates and migrates a new SQLite file; two processes doing it at once
    # collide ("duplicate column name"), e.g. two studies launched together on fresh storage.
    with FileLock(uri.removeprefix("sqlite:///").split("?")[0] + ".lock"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _migrated.add(uri)
    return client


def ensure_experiment(cfg: PrefsweepConfig, uri: str) -> str:
    client = client_for(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Next to the database, not in the working directory (MLflow's ./mlruns default).
        artifact_location = Path(cfg.resolved_storage(), MLFLOW_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(cfg.tracking.experiment, artifact_location=artifact_location)
    except Exception:  # another process created it first
        return client.get_experiment_by_name(cfg.tracking.experiment).experiment_id


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not name.startswith("sweep.parameters"):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def create_run(uri: str, experiment_id: str, name: str, *, tags: dict[str, str],
               params: dict[str, Any] | None = None) -> str:
    client = client_for(uri)
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    if params:
        log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    # Masked here, where every param write passes: the driver logs whole configs, whose
    # storage.optuna_url / tracking URI may carry a password.
    items = [Param(k, v) for k, v in flatten(mask(params)).items()]
    client = client_for(uri)
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def find_run(uri: str, experiment_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client_for(uri).search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client_for(uri).set_terminated(run_id, status=status)


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    client = client_for(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, mask_url(str(value)))  # error texts may quote a URL


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    StepLogger(uri, run_id).log(metrics, step=step or 0)


class StepLogger:
    """Rank-0 metric logging for one run; batches each call into one request."""

    def __init__(self, uri: str, run_id: str):
        self.client = client_for(uri)
        self.run_id = run_id

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """Appends to the run's table artifact (MLflow's log_table), which the UI's evaluation
        view compares across runs."""
        self.client.log_table(self.run_id, data=columns, artifact_file=artifact_file)

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)
