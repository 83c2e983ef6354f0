"""Issue 10's attacks, replayed against the real service: `prefsweep serve` over real HTTP on
loopback, a token set, Optuna and the studies table in a real Postgres (tests/postgres.py),
studies launched as real Ray jobs. Each numbered test is the attack of that number; every
response of the module is recorded and, at the end, checked for a 500 and for a secret (the
Postgres password, the API token, the planted API key) in any body.

Bounded: one tiny sweep (1 trial, 4 steps) runs while the other attacks are tried, and the
load test runs 6 s. The tests run in file order and share the service."""
from __future__ import annotations

import shutil
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from sweep.config.loading import set_dotted

try:
    from .api_service import AUTH, REPO, TOKEN, Service, small_config
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import AUTH, REPO, TOKEN, Service, small_config

pytestmark = pytest.mark.ray
TINY, LOADED = "tiny-secret", "loaded"
PLANTED = "sk-live-123"
RESPONSES: list[httpx.Response] = []


@pytest.fixture(scope="module")
def service(ray_cluster, postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("attacks")
    shutil.copytree(REPO / "sweep" / "data" / "demo", base / "data" / "demo")  # a data root with files in it
    (base / "outside" / "ds").mkdir(parents=True)  # beside the data root, not in it
    (base / "outside" / "ds" / "train.csv").write_text(f"API_KEY={PLANTED}\nprompt,chosen,rejected\n")
    (base / "outside" / "modeldir").mkdir()
    svc = Service(base, ray_cluster["dashboard"], workdir=str(base), data_roots=str(base / "data"),
                  optuna_url=postgres.url("optuna"), db_url=postgres.url("prefsweep_api"), max_running_studies="1")
    for client in (svc.client, svc.anon):
        client.event_hooks["response"].append(lambda r: (r.read(), RESPONSES.append(r)))
    svc.start()
    yield svc
    svc.stop()


def tiny(name: str = TINY) -> dict:
    cfg = small_config(name)
    cfg["train"].update(max_steps=4, eval_every=2, logging_steps=2)
    cfg["sweep"].update(num_trials=1)
    cfg["data"]["train"]["limit"], cfg["data"]["eval"]["limit"] = 64, 32
    return cfg


def set_key(cfg: dict, dotted: str, value) -> dict:
    set_dotted(cfg, dotted, value)  # the CLI's --set
    return cfg


def refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in [p["field"] for p in response.json()["detail"]], response.text


def test_0_a_real_launch_and_the_running_limit(service):
    assert service.client.post("/studies", json=tiny()).status_code == 201
    assert service.client.post("/studies", json=tiny("second")).status_code == 429  # max_running_studies=1


def test_1_nothing_without_the_token(service):
    routes = [("GET", "/studies"), ("GET", f"/studies/{TINY}"), ("GET", f"/studies/{TINY}/trials"),
              ("GET", f"/studies/{TINY}/best"), ("GET", f"/studies/{TINY}/logs"), ("POST", f"/studies/{TINY}/cancel"),
              ("POST", f"/studies/{TINY}/generate"), ("POST", "/studies")]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path in routes:
            response = service.anon.request(method, path, headers=headers, json={"prompt": "hi"})
            assert response.status_code == 401, (method, path, response.text)
    assert service.anon.get("/healthz").status_code == 200 and service.anon.get("/").status_code == 200


@pytest.mark.parametrize("key,value", [
    ("data.train.hf", "{base}/outside/ds"), ("data.train.hf", "outside/ds"), ("data.eval.hf", "data/../outside/ds"),
    ("data.train.path", "{base}/outside/ds/train.csv"), ("model.name_or_path", "outside/modeldir"),
    ("model.ref_name_or_path", "{base}/outside/modeldir"),
])
def test_2_no_source_outside_the_data_roots(service, key, value):
    cfg, value = tiny("escape"), value.format(base=service.base)
    if key.startswith("data."):
        _, split, kind = key.split(".")
        cfg["data"][split] = {kind: value}
    else:
        cfg["model"][key.split(".")[1]] = value
    response = service.client.post("/studies", json=cfg)
    refused(response, key)
    assert "outside the allowed data roots" in response.text


@pytest.mark.parametrize("raw", [
    '{"prompt": "hi", "top_p": NaN}', '{"prompt": "hi", "temperature": Infinity}',
    '{"prompt": "hi", "max_new_tokens": NaN}', '{"prompt": "\\ud800"}',
    '{"prompt": ' + "[" * 900 + "]" * 900 + "}",
])
def test_4_generate_bad_numbers_and_text_are_422(service, raw):
    response = service.client.post(f"/studies/{TINY}/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("key,value", [
    (key, float("inf")) for key in ("objective.beta", "train.learning_rate", "train.weight_decay",
                                    "train.max_grad_norm", "resources.cpus_per_worker",
                                    "sweep.early_terminate.reduction_factor", "objective.desirable_weight",
                                    "objective.undesirable_weight")
] + [("objective.gamma", float("nan")), ("train.max_steps", 2**64), ("sweep.num_trials", 2**64),
     ("sweep.seed", -1), ("train.seed", 2**32)])
def test_4_config_bad_numbers_are_422_before_anything_is_written(service, key, value):
    import json

    name = "bad-" + key.replace(".", "-").replace("_", "-")
    raw = json.dumps(set_key(tiny(name), key, value))  # JSON's NaN / Infinity spellings, as Python writes them
    refused(service.client.post("/studies", content=raw, headers={"Content-Type": "application/json"}), key)
    assert service.client.get(f"/studies/{name}").status_code == 404
    assert not (service.base / "svc" / "configs" / f"{name}.yaml").exists()
    assert not (service.base / "runs" / name).exists()


def test_4_a_deep_config_body_is_422(service):
    response = service.client.post("/studies", content='{"name": ' + "[" * 900 + "]" * 900 + "}",
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "deeper than 32" in response.text


@pytest.mark.parametrize("name", ["nl\n", "mlflow.db", "optuna.db", "mlartifacts", "refcache"])
def test_5_names_that_cannot_be_studies(service, name):
    refused(service.client.post("/studies", json=tiny(name)), "name")


def test_6_set_yaml_work_never_stalls_the_event_loop(service):
    chain = "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
            "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    refused(service.client.post("/studies", params={"set": f"data.columns={chain}"}, json=tiny("alias")),
            "data.columns")
    # A large legal YAML body takes PyYAML seconds to read: /healthz answers meanwhile.
    big = "name: big\nbogus: [" + ", ".join(str(i) for i in range(60_000)) + "]\n"
    answer: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: answer.append(service.client.post(
        "/studies", content=big, headers={"Content-Type": "application/yaml"})))
    slow.start()
    latencies = []
    while slow.is_alive():
        started = time.monotonic()
        assert service.anon.get("/healthz", timeout=10).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    slow.join()
    print(f"/healthz while a {len(big) // 1024} KiB YAML body is read: {len(latencies)} probes, "
          f"max {max(latencies) * 1000:.0f} ms")
    assert len(latencies) >= 2 and max(latencies) < 1.0
    refused(answer[0], "bogus")


@pytest.mark.parametrize("body,field", [({"prompt": "hi", "unknown": 1}, "unknown"),
                                        ({"prompt": "hi", "temperature": False}, "temperature"),
                                        ({"prompt": "hi", "max_new_tokens": True}, "max_new_tokens")])
def test_7_generate_schema_is_strict(service, body, field):
    refused(service.client.post(f"/studies/{TINY}/generate", json=body), field)


def service_connections(postgres, service) -> int:
    """Connections the service process holds to Postgres (sweep.storage.databases names them by pid)."""
    with postgres.connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (f"prefsweep-{service.proc.pid}",)).fetchone()[0]


def plant_loaded_study(service, postgres, trials: int = 200) -> None:
    """A study with `trials` Optuna trials in Postgres, its study.json and its row, made directly
    (no sweep): what /trials reads."""
    import json

    import optuna

    from sweep.config.redact import write_private
    from sweep.service.index import Database, Study

    cfg = set_key(tiny(LOADED), "storage", {"path": str(service.base / "runs"), "optuna_url": postgres.url("optuna")})
    storage = optuna.storages.RDBStorage(postgres.url("optuna"))
    study = optuna.create_study(study_name=LOADED, storage=storage, direction="maximize")
    dist = {"objective.beta": optuna.distributions.FloatDistribution(0.01, 1.0)}
    study.add_trials([optuna.trial.create_trial(params={"objective.beta": 0.01 + 0.9 * i / trials}, distributions=dist,
                                                value=i / trials, intermediate_values={1: i / trials / 2})
                      for i in range(trials)])
    storage.engine.dispose()
    record = {"name": LOADED, "config": cfg, "tracking_uri": f"sqlite:///{service.base}/runs/mlflow.db",
              "experiment_id": "0", "parent_run_id": "none", "optuna_url": postgres.url("optuna"), "state": "running"}
    write_private(service.base / "runs" / LOADED / "study.json", json.dumps(record))  # as the driver writes it
    db = Database(postgres.url("prefsweep_api"))
    db.add(Study(id=LOADED, name=LOADED, config=cfg, owner="bench", state="running"))
    db.engine.dispose()


def test_3_forty_readers_never_exhaust_postgres(service, postgres):
    plant_loaded_study(service, postgres)
    deadline = time.monotonic() + 6
    statuses: list[tuple[int, float, str | None]] = []
    peak, health = [0], []

    def reader(headers):
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = client.get(f"/studies/{LOADED}/trials")
                RESPONSES.append(response)
                statuses.append((response.status_code, time.monotonic() - started, response.headers.get("retry-after")))

    def watch():
        while time.monotonic() < deadline:
            peak[0] = max(peak[0], service_connections(postgres, service))
            started = time.monotonic()
            assert service.anon.get("/healthz").status_code == 200
            health.append(time.monotonic() - started)
            time.sleep(0.2)

    threads = [threading.Thread(target=reader, args=(AUTH,)) for _ in range(40)]
    threads += [threading.Thread(target=reader, args=({},)) for _ in range(5)]  # no token: 401, cheaply
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    authed = sorted(t for code, t, _ in statuses if code != 401)
    codes = {code for code, _, _ in statuses}
    print(f"/trials, 40 clients for 6 s: {len(authed)} answers, p50 {authed[len(authed) // 2] * 1000:.0f} ms, "
          f"{sum(c == 503 for c, _, _ in statuses)} x 503, peak {peak[0]} connections, "
          f"/healthz max {max(health) * 1000:.0f} ms")
    assert codes <= {200, 401, 503} and 200 in codes and 401 in codes, codes
    assert all(retry == "1" for code, _, retry in statuses if code == 503)
    from sweep.storage.databases import MAX_OVERFLOW, POOL_SIZE

    assert peak[0] <= 2 * (POOL_SIZE + MAX_OVERFLOW)  # two stores: the studies table and Optuna
    assert max(health) < 2.0
    give_back = time.monotonic() + 30
    while service_connections(postgres, service) and time.monotonic() < give_back:
        time.sleep(0.5)
    assert service_connections(postgres, service) == 0, "connections left open after the load stopped"


def readable_by_others(path: Path, top: Path) -> bool:
    """Whether a user other than the owner could read `path`: the file and every directory
    below `top` (pytest's own temp dir, 0700, is no credit to the service) must let them in."""
    if not stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH:
        return False
    return all(stat.S_IMODE(d.stat().st_mode) & stat.S_IXOTH for d in path.parents
               if d != top and d.is_relative_to(top))


def test_1_after_a_run_no_password_leaves(service, postgres):
    from mlflow import MlflowClient

    study = service.wait(TINY, lambda s: s["state"] not in ("pending", "running"), timeout=300)
    assert study["state"] == "finished", (study, service.log_tail())
    masked = postgres.url("optuna").replace(postgres.password, "***")
    assert study["config"]["storage"]["optuna_url"] == masked
    for path in (f"/studies/{TINY}/trials", f"/studies/{TINY}/best", f"/studies/{TINY}/logs", "/studies"):
        assert service.client.get(path).status_code == 200, path
    # The run-time files keep the real URL, for their owner alone.
    configs, record = service.base / "svc" / "configs", service.base / "runs" / TINY / "study.json"
    for path, mode in ((configs, 0o700), (configs / f"{TINY}.yaml", 0o600), (record.parent, 0o700), (record, 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert postgres.password in record.read_text()  # resume and the service reach the database with it
    leaking = [p for p in service.base.rglob("*") if p.is_file() and not p.is_symlink()
               and postgres.password.encode() in p.read_bytes() and readable_by_others(p, service.base)]
    assert leaking == []
    uri = f"sqlite:///{service.base}/runs/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("prefsweep").experiment_id])
    assert {r.data.tags.get("prefsweep.kind") for r in runs} >= {"study", "trial"}
    for run in runs:
        assert postgres.password not in repr(run.data.params) + repr(run.data.tags)
        assert run.data.params["storage.optuna_url"] == masked


def test_z_no_server_error_and_no_secret_in_any_response(service, postgres):
    assert len(RESPONSES) > 100
    server_errors = [(r.request.url, r.status_code) for r in RESPONSES
                     if r.status_code >= 500 and not (r.status_code == 503 and r.headers.get("retry-after"))]
    assert server_errors == []
    for secret in (postgres.password, TOKEN, PLANTED):
        found = [str(r.request.url) for r in RESPONSES if secret in r.text]
        assert found == [], (secret[:4] + "...", found[:5])
