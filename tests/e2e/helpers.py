"""Reading what a run left behind: MLflow runs, Optuna trials, study status."""
from __future__ import annotations

import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def mlflow_client(storage: Path) -> MlflowClient:
    uri = f"sqlite:///{storage}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs_by_kind(storage: Path, kind: str) -> list:
    client = mlflow_client(storage)
    experiment = client.get_experiment_by_name("prefsweep")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefsweep.kind` = '{kind}'")


def optuna_trials(storage: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}/optuna.db").trials


def sweep_args(storage: Path, name: str, *extra: str) -> list[str]:
    return ["configs/demo.yaml", "--set", f"name={name}", "--set", f"storage.path={storage}", *extra]
