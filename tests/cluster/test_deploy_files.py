"""Static checks of docker/ (no Docker engine here; .ci/run also runs `docker compose config`
when the client's compose plugin exists). Fast: no cluster, no marker."""
from __future__ import annotations

import re

import yaml

from .support import REPO

DOCKER = REPO / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_the_cluster_services_with_healthchecks():
    services = compose()["services"]
    assert {"ray-head", "ray-worker", "postgres", "mlflow", "api"} <= set(services)
    for name in ("ray-head", "ray-worker", "postgres", "mlflow", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # Workers scale (no fixed container_name or published ports) and join the head.
    worker = services["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "--address=ray-head:6379" in " ".join(worker["command"])
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    # Token auth on every Ray node and in the API's Jobs client; no default token.
    for name in ("ray-head", "ray-worker", "ray-worker-gpu"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and ":?" in env["RAY_AUTH_TOKEN"]
    assert ":?" in services["api"]["environment"]["PREFSWEEP_API_TOKEN"]
    # One shared volume for storage.path and MLflow artifacts on every node.
    for name in ("ray-head", "ray-worker", "mlflow", "api"):
        assert "shared:/shared" in services[name]["volumes"]


def test_compose_urls_match_the_cluster_config():
    text = (DOCKER / "compose.yaml").read_text()
    cfg = yaml.safe_load((REPO / "configs/cluster-demo.yaml").read_text())
    assert cfg["tracking"]["mlflow_tracking_uri"] == "http://mlflow:5000"
    assert cfg["storage"]["path"].startswith("/shared/")
    optuna = cfg["storage"]["optuna_url"].replace("prefsweep:prefsweep@", "prefsweep:${POSTGRES_PASSWORD:-prefsweep}@")
    assert optuna in text


def test_compose_interpolations_have_defaults_or_errors():
    text = (DOCKER / "compose.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for match in re.finditer(r"\$\{([^}]*)\}", body):
        assert re.match(r"^[A-Z_]+(:-[^}]*|:\?[^}]+)$", match.group(1)), match.group(0)


def test_dockerfile_has_cpu_and_cuda_variants():
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text
    assert re.search(r"cpu\)\s+index=cpu", text) and re.search(r"cuda\)\s+index=", text)
    assert "pip install ." in text and "USER ray" in text


def test_kuberay_manifests():
    cluster = list(yaml.safe_load_all((DOCKER / "kuberay/raycluster.yaml").read_text()))
    job = list(yaml.safe_load_all((DOCKER / "kuberay/rayjob.yaml").read_text()))
    kinds = [d["kind"] for d in cluster + job]
    assert kinds == ["PersistentVolumeClaim", "RayCluster", "RayJob"]
    rayjob = job[0]["spec"]
    assert rayjob["entrypoint"].startswith("prefsweep run configs/cluster-demo.yaml")
    head = rayjob["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert {"name": "shared", "mountPath": "/shared"} in head["volumeMounts"]
