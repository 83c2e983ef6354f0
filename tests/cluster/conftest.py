"""The multi-node tier (`pytest -m cluster`): a real two-node Ray cluster on this machine and
the shared services a cluster needs, all started here and stopped here, even on failure.

- Ray: `ray start --head` (1 CPU, dashboard, token auth on) and a second node with
  `ray start --address` (its own CPU and a `node_b` custom resource, so tests can tell the
  nodes apart). The token lives in a 0600 file in the cluster's temp dir and reaches every
  process through RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH, as on a real cluster.
- Postgres: a throwaway cluster (tests/postgres.py: `initdb` + `pg_ctl`, as the `postgres` user when root)
  on a free port, password auth over TCP, with databases for Optuna, MLflow and the REST
  service. Without Postgres binaries (dev machines) the tier skips; CI installs them
  (scripts/system-packages.sh).
- `mlflow server`: backend store in Postgres, artifacts proxied into a directory.
- Shared storage: an absolute directory every node sees (here: the same disk).

Everything lives in short temp dirs under /tmp (Ray's socket paths must fit in 107 bytes)
and is stopped by pid / by the temp dir in a process's command line; nothing else on the
machine is touched (no machine-wide `ray stop`).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from postgres import postgres_server
from processes import processes_under, stop_processes_under, wait_for

from sweep.study.ray_cluster import free_port

from .support import BIN, REPO, _tail, background, http_json

# ----------------------------------------------------------------------------- Ray cluster


@dataclass
class RayCluster:
    temp: str                      # Ray's --temp-dir: every process of this cluster names it
    shared: Path                   # storage every node sees (absolute)
    token: str
    env: dict[str, str]            # for `ray`, `prefsweep` and anything that talks to the cluster
    address: str = ""              # GCS host:port (RAY_ADDRESS for ray.init)
    dashboard: str = ""            # http://host:port (Jobs API, `ray job submit --address`)
    head_id: str = ""
    workers: dict[str, str] = field(default_factory=dict)  # custom resource name -> node id

    def ray(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "ray"), *args], env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(args[:3])} ... exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def start_head(self) -> None:
        port, dash = free_port(), free_port()
        # Every process of the cluster inherits RAY_ADDRESS: Ray's own helpers that look
        # for "the" local cluster (Train's placement-group cleaner, the state API) would
        # otherwise pick whichever cluster on this machine started last.
        self.env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        # Free ports for everything with a fixed default (client server 10001, dashboard
        # agent 52365): other clusters on this machine may hold those.
        self.ray("start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={self.temp}",
                 "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
                 "--object-store-memory=300000000", "--disable-usage-stats", timeout=180)
        self.address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        heads = wait_for(lambda: [n for n in self.nodes() if n.get("is_head_node")], 60, "the head node")
        self.head_id = heads[0]["node_id"]

    def add_worker(self, name: str) -> str:
        """Another node on this machine: `ray start --address` with 1 CPU, a custom resource
        `name`, and its own temp dir inside the cluster's (so it is stopped with it). Its own
        session dir matters: nodes sharing one would share `runtime_resources/`, and one
        node unpacking a job's --working-dir there deletes the copy another node's job
        driver is running in (on real clusters every node has its own disk)."""
        self.ray("start", f"--address={self.address}", "--num-cpus=1", f"--resources={json.dumps({name: 1})}",
                 f"--temp-dir={self.temp}/{name}",
                 f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=300000000",
                 "--disable-usage-stats", timeout=180)
        nodes = wait_for(lambda: [n for n in self.nodes() if name in n["resources_total"]], 60, f"node {name}")
        self.workers[name] = nodes[0]["node_id"]
        return self.workers[name]

    def nodes(self, alive_only: bool = True) -> list[dict]:
        """Nodes from the dashboard's state API (authenticated with the cluster token)."""
        status, body = http_json(f"{self.dashboard}/api/v0/nodes?limit=100&detail=1", token=self.token)
        if status != 200:
            return []
        nodes = body["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE" or not alive_only]

    def actors_named(self, name: str) -> list[dict]:
        """Actors of that name, dead ones included, from the dashboard's state API."""
        status, body = http_json(f"{self.dashboard}/api/v0/actors?limit=100&detail=1&filter_keys=name"
                                 f"&filter_predicates=%3D&filter_values={name}", token=self.token)
        assert status == 200, body
        return body["data"]["result"]["result"]

    def lose_node(self, node_id: str) -> None:
        """SIGKILL a node the way a lost machine goes: its raylet and every process under it at
        once (killing the raylet alone leaves its workers running until they notice, time
        enough for a trial near its end to finish there)."""
        import psutil

        raylet = self.raylet_of(node_id)
        for proc in [raylet, *raylet.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    def raylet_of(self, node_id: str):
        """The raylet process of one node of this cluster."""
        for proc in processes_under(self.temp):
            with contextlib.suppress(Exception):
                cmd = proc.cmdline()
                if cmd and cmd[0].endswith("/raylet") and f"--node_id={node_id}" in cmd:
                    return proc
        raise AssertionError(f"no raylet for node {node_id}")

    def job_status(self, submission_id: str) -> dict:
        status, body = http_json(f"{self.dashboard}/api/jobs/{submission_id}", token=self.token)
        assert status == 200, body
        return body

    def job_logs(self, submission_id: str) -> str:
        status, body = http_json(f"{self.dashboard}/api/jobs/{submission_id}/logs", token=self.token)
        return body.get("logs", "") if status == 200 and isinstance(body, dict) else str(body)

    def wait_job(self, submission_id: str, timeout: float) -> dict:
        final = ("SUCCEEDED", "FAILED", "STOPPED")
        return wait_for(lambda: (info := self.job_status(submission_id))["status"] in final and info,
                        timeout, f"Ray job {submission_id}", interval=3)


@pytest.fixture(scope="package")
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="psc-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    token_file = Path(temp, "auth_token")
    token = secrets.token_hex(32)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    shared = Path(temp, "shared")
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI")}
    env.update({
        # Token auth, explicitly on: `ray start` only turns it on by itself when it finds a token.
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
        # Nodes run `prefsweep` job entrypoints and import this checkout, as an activated venv would.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    cluster = RayCluster(temp=temp, shared=shared, token=token, env=env)
    try:
        cluster.start_head()
        cluster.add_worker("node_b")
        yield cluster
    finally:
        stop_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


# ----------------------------------------------------------------------------- Postgres

# A throwaway Postgres (tests/postgres.py, shared with the e2e tier's attack tests).
postgres = pytest.fixture(scope="package")(postgres_server)


# ----------------------------------------------------------------------------- MLflow server


@pytest.fixture(scope="package")
def mlflow_server(ray_cluster, postgres):
    port = free_port()
    artifacts = ray_cluster.shared / "mlartifacts"
    log = Path(ray_cluster.temp, "mlflow-server.log")
    args = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres.url("mlflow"),
            "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in ray_cluster.env.items() if not k.startswith("RAY_")}
    with background(args, env=env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            wait_for(healthy, 120, "mlflow server /health", proc)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{_tail(log)}") from None
        yield url


@dataclass
class Services:
    mlflow: str            # tracking URI of the MLflow server
    optuna_url: str        # Optuna RDB storage in Postgres
    api_db_url: str        # the REST service's database in Postgres
    storage: Path          # shared storage.path


@pytest.fixture(scope="package")
def services(ray_cluster, postgres, mlflow_server) -> Services:
    return Services(mlflow=mlflow_server, optuna_url=postgres.url("optuna"),
                    api_db_url=postgres.url("prefsweep_api"), storage=ray_cluster.shared / "runs")
