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


def dashboard_trials(storage: Path, name: str) -> list[dict]:
    """A study's trials as optuna-dashboard's own JSON API serves them (its WSGI app on a
    loopback port, queried over HTTP): number, state, user_attrs as {key: value}."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import httpx
    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(f"sqlite:///{storage}/optuna.db"))
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        studies = httpx.get(f"{base}/api/studies", timeout=30).json()["study_summaries"]
        (study_id,) = [s["study_id"] for s in studies if s["study_name"] == name]
        trials = httpx.get(f"{base}/api/studies/{study_id}", timeout=30).json()["trials"]
    finally:
        server.shutdown()
    return [{**t, "user_attrs": {a["key"]: a["value"] for a in t["user_attrs"]}} for t in trials]
