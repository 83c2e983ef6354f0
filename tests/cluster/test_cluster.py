"""Sweeps on a real two-node Ray cluster with shared tracking and storage (see conftest.py).

Every trial's rank-0 worker tags its MLflow run with the Ray node it ran on
(`prefsweep.node_id`, and `prefsweep.nodes` for every attempt in order), which is how these
tests see placement; the worker node carries a `node_b` custom resource to tell it apart.
Sweeps are small (2 trials in parallel, one per 1-CPU node) but real: Tune + Train + Optuna
in Postgres + an MLflow server, submitted as Ray jobs."""
from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from browser import ARTIFACTS, CHROMIUM, chromium_page, open_study_list
from processes import wait_for

from sweep.study.ray_cluster import free_port

from .support import BIN, REPO, background, http_json

pytestmark = pytest.mark.cluster

# A quick sweep: 2 trials at a time, one per 1-CPU node, every trial to its last step.
QUICK = ["sweep.max_concurrent_trials=2", "sweep.early_terminate=null", "train.eval_every=10",
         "train.logging_steps=10", "train.warmup_steps=0", "data.train.limit=96", "data.eval.limit=32"]


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def trial_runs(tracking_uri: str, study: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("prefsweep")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=100,
                              filter_string=f"tags.`prefsweep.study` = '{study}' and tags.`prefsweep.kind` = 'trial'")


def optuna_trials(url: str, study: str) -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=url).trials


def eval_steps(tracking_uri: str, run) -> list[int]:
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "eval/loss")]


def record(storage: Path, study: str) -> dict:
    return json.loads((storage / study / "study.json").read_text())


def ensure_two_nodes(ray_cluster) -> str:
    """The id of an alive worker node, adding one if an earlier test took it down."""
    alive = {n["node_id"] for n in ray_cluster.nodes()}
    for node in ray_cluster.workers.values():
        if node in alive:
            return node
    return ray_cluster.add_worker(f"node_{secrets.token_hex(2)}")


def test_two_nodes_with_token_auth(ray_cluster, tmp_path):
    nodes = ray_cluster.nodes()
    assert len(nodes) == 2 and sum(n["is_head_node"] for n in nodes) == 1
    worker = ray_cluster.workers["node_b"]
    assert {n["node_id"] for n in nodes} == {ray_cluster.head_id, worker}
    assert all(n["resources_total"]["CPU"] == 1 for n in nodes)
    # Auth is on: the Jobs/State HTTP API refuses a request without the token, and a
    # client with no token anywhere (no env, no ~/.ray/auth_token) cannot submit.
    status, _ = http_json(f"{ray_cluster.dashboard}/api/v0/nodes")
    assert status == 401
    env = {k: v for k, v in ray_cluster.env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)
    refused = subprocess.run([str(BIN / "ray"), "job", "list", f"--address={ray_cluster.dashboard}"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, refused.stdout
    assert "token" in (refused.stdout + refused.stderr).lower()


def test_ray_job_submit_runs_the_demo_on_both_nodes(ray_cluster, services, api, tmp_path):
    """`ray job submit --working-dir . -- prefsweep run configs/demo.yaml`, with only the
    storage path and service URLs changed: Optuna in Postgres (--set), MLflow server (env).
    The REST service on the same storage lists it as a study started by a Ray job, and serves it."""
    worker = ensure_two_nodes(ray_cluster)
    study, storage = "demo-job", services.storage
    submission = f"{study}-{secrets.token_hex(3)}"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": services.mlflow}}
    proc = ray_cluster.ray(
        "job", "submit", f"--address={ray_cluster.dashboard}", f"--submission-id={submission}", "--working-dir=.",
        f"--runtime-env-json={json.dumps(runtime_env)}", "--",
        "prefsweep", "run", "configs/demo.yaml",
        *sets(f"name={study}", f"storage.path={storage}", f"storage.optuna_url={services.optuna_url}",
              "sweep.num_trials=2", "train.max_steps=10", *QUICK),
        check=False, timeout=540)
    logs = proc.stdout[-8000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, logs
    assert ray_cluster.job_status(submission)["status"] == "SUCCEEDED"

    # The study lives on shared storage, not in the job's temp copy of the repo.
    assert record(storage, study)["state"] == "finished", logs
    assert record(storage, study)["tracking_uri"] == services.mlflow
    runs = trial_runs(services.mlflow, study)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), logs
    assert {r.data.tags["prefsweep.node_id"] for r in runs} == {ray_cluster.head_id, worker}
    assert all(t.state.name == "COMPLETE" for t in optuna_trials(services.optuna_url, study))

    # Checkpoints are on shared storage, and the best one exports from there.
    out = tmp_path / "best"
    best = subprocess.run([str(BIN / "prefsweep"), "best", study, "--storage", str(storage), "--export", str(out)],
                          cwd=tmp_path, env=ray_cluster.env, capture_output=True, text=True, timeout=300)
    assert best.returncode == 0, best.stdout + best.stderr
    assert record(storage, study)["best"]["checkpoint_path"].startswith(str(storage))
    assert (out / "config.json").is_file() and (out / "README.md").is_file()
    served_by_the_service(api, study, submission, services)


def served_by_the_service(api: dict, study: str, submission: str, services) -> None:
    """What the REST service (and its page) says of a study a `ray job submit` ran."""
    code, page = http_json(f"{api['url']}/studies", token=api["token"])
    assert code == 200, page
    listed = {s["name"]: s for s in page["items"]}[study]
    assert (listed["owner"], listed["state"], listed["progress"]) == ("job", "finished", {"done": 2, "total": 2})
    code, detail = http_json(f"{api['url']}/studies/{study}", token=api["token"])
    assert code == 200 and detail["ray"]["submission_id"] == submission, detail
    assert services.optuna_url not in json.dumps(detail) and "***" in detail["config"]["storage"]["optuna_url"]
    code, trials = http_json(f"{api['url']}/studies/{study}/trials", token=api["token"])
    assert code == 200 and [t["state"] for t in trials["trials"]] == ["finished", "finished"], trials
    code, best = http_json(f"{api['url']}/studies/{study}/best", token=api["token"])
    assert code == 200 and best["trial_id"] == detail["best"]["trial_id"], best
    code, text = http_json(f"{api['url']}/studies/{study}/generate", token=api["token"], method="POST",
                           body={"prompt": "User: Tea?\nAssistant:", "max_new_tokens": 8, "temperature": 0}, timeout=300)
    assert code == 200 and text["trial_id"] == best["trial_id"], text
    if CHROMIUM.exists():
        with chromium_page() as browser:
            row = open_study_list(browser, api["url"], api["token"], study)
            assert "job" in row.inner_text() and "finished" in row.inner_text()
            row.locator("a").click()
            browser.locator("#trials tbody tr").nth(1).wait_for()
            assert browser.locator("#facts").inner_text().count(submission) == 1
            browser.screenshot(path=str(ARTIFACTS / "web-cluster-job-study.png"), full_page=True)
            assert browser.errors == []


@pytest.fixture
def api(ray_cluster, services, tmp_path):
    """`prefsweep serve` wired to the cluster (Jobs API + token) and the shared services."""
    token, port = secrets.token_urlsafe(24), free_port()
    env = {**ray_cluster.env,
           "PREFSWEEP_API_TOKEN": token, "PREFSWEEP_DB_URL": services.api_db_url,
           "PREFSWEEP_DATA_DIR": str(tmp_path / "api"), "PREFSWEEP_WORKDIR": str(REPO),
           "PREFSWEEP_STORAGE_PATH": str(services.storage), "PREFSWEEP_OPTUNA_URL": services.optuna_url,
           "PREFSWEEP_MLFLOW_TRACKING_URI": services.mlflow, "PREFSWEEP_RAY_ADDRESS": ray_cluster.dashboard,
           "PREFSWEEP_JOB_COMMAND": "prefsweep"}
    log = tmp_path / "api.log"
    with background([str(BIN / "prefsweep"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return http_json(f"{url}/healthz", timeout=5)[0] == 200
            except OSError:
                return False

        wait_for(healthy, 120, "prefsweep serve /healthz", proc)
        yield {"url": url, "token": token, "log": log}


def test_rest_service_sweep_spreads_over_both_nodes(ray_cluster, services, api):
    """A 4-trial study POSTed to the REST service runs as a Ray job over both nodes, is
    tracked in the MLflow server and Optuna-in-Postgres, and is read back through REST."""
    worker = ensure_two_nodes(ray_cluster)
    study = "rest-sweep"
    cfg = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    for section in ("storage", "tracking"):
        cfg.pop(section)  # the server decides where studies go
    cfg["name"] = study
    query = "&".join(f"set={s}" for s in ["sweep.num_trials=4", "train.max_steps=20", *QUICK])
    status, created = http_json(f"{api['url']}/studies?{query}", token=api["token"], method="POST", body=cfg)
    assert status == 201, created
    assert created["id"] == study and created["submission_id"]

    def ended():
        code, detail = http_json(f"{api['url']}/studies/{study}", token=api["token"])
        assert code == 200, detail
        return detail if detail["state"] not in ("pending", "running") else None

    detail = wait_for(ended, 540, "the REST study to end", interval=5)
    job_logs = ray_cluster.job_logs(created["submission_id"])[-6000:]
    assert detail["state"] == "finished", (detail, job_logs)
    assert detail["progress"] == {"done": 4, "total": 4}
    assert detail["mlflow"]["tracking_uri"] == services.mlflow
    code, trials = http_json(f"{api['url']}/studies/{study}/trials", token=api["token"])
    assert code == 200 and len(trials["trials"]) == 4, trials
    assert all(t["state"] == "finished" for t in trials["trials"]), trials
    code, best = http_json(f"{api['url']}/studies/{study}/best", token=api["token"])
    assert code == 200 and best["value"] is not None and best["checkpoint_path"].startswith(str(services.storage))

    runs = trial_runs(services.mlflow, study)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["prefsweep.node_id"] for r in runs} == {ray_cluster.head_id, worker}
    completed = [t for t in optuna_trials(services.optuna_url, study) if t.state.name == "COMPLETE"]
    assert len(completed) == 4


def test_losing_the_worker_node_mid_sweep(ray_cluster, services):
    """SIGKILL the worker node (its raylet and its workers) while a trial trains there: the
    trial restarts on the head from its last checkpoint and the study still finishes. The
    study's coordinator (its tokenization, its reference passes) lives on the driver's node,
    so it survives."""
    worker = ensure_two_nodes(ray_cluster)
    study, storage = "node-loss", services.storage
    submission = f"{study}-{secrets.token_hex(3)}"
    ray_cluster.ray(
        "job", "submit", "--no-wait", f"--address={ray_cluster.dashboard}", f"--submission-id={submission}",
        "--working-dir=.", "--",
        "prefsweep", "run", "configs/cluster-demo.yaml",
        *sets(f"name={study}", f"storage.path={storage}", f"storage.optuna_url={services.optuna_url}",
              f"tracking.mlflow_tracking_uri={services.mlflow}",
              "sweep.num_trials=2", "train.max_steps=60", "sweep.max_retries=2", *QUICK),
        timeout=180)

    def trial_past_its_first_checkpoint_on_the_worker():
        status = ray_cluster.job_status(submission)["status"]
        assert status in ("PENDING", "RUNNING"), ray_cluster.job_logs(submission)[-6000:]
        for run in trial_runs(services.mlflow, study):
            # Step 20's evaluation is logged after step 10's checkpoint was reported.
            if run.data.tags.get("prefsweep.node_id") == worker and 20 in eval_steps(services.mlflow, run):
                return run
        return None

    victim = wait_for(trial_past_its_first_checkpoint_on_the_worker, 360, "a trial to train on the worker node",
                      interval=2)
    ray_cluster.lose_node(worker)  # 40 steps before the trial's end: it cannot finish there

    info = ray_cluster.wait_job(submission, 480)
    logs = ray_cluster.job_logs(submission)[-8000:]
    assert info["status"] == "SUCCEEDED", logs
    # The GCS declares the node dead only after it misses enough health checks, which can come
    # after the study, restarted on the head, has already finished.
    def worker_declared_dead():
        alive = {n["node_id"] for n in ray_cluster.nodes()}
        return bool(alive) and worker not in alive  # an empty list is the dashboard not answering

    wait_for(worker_declared_dead, 120, "the worker node declared dead")
    assert record(storage, study)["state"] == "finished", logs
    runs = {r.data.tags["prefsweep.trial_id"]: r for r in trial_runs(services.mlflow, study)}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values()), logs
    moved = runs[victim.data.tags["prefsweep.trial_id"]]
    nodes = moved.data.tags["prefsweep.nodes"].split(",")
    assert nodes[0] == worker and nodes[-1] == ray_cluster.head_id, nodes
    # It resumed from a checkpoint, not from scratch: step 10's evaluation was logged once.
    steps = eval_steps(services.mlflow, moved)
    assert steps.count(10) == 1 and max(steps) == 60, steps
    assert "resumed from the checkpoint of step" in ray_cluster.job_logs(submission)
    assert all(t.state.name == "COMPLETE" for t in optuna_trials(services.optuna_url, study))
    coordinators = ray_cluster.actors_named(f"prefsweep-study-{study}")
    assert coordinators and {a["node_id"] for a in coordinators} == {ray_cluster.head_id}, coordinators
