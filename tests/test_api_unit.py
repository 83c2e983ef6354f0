"""REST service without Ray: auth, config validation (422), path policy, limits, persistence
and reconciliation logic. One real uvicorn on a free port (real HTTP); Ray's address points
at a closed port, so anything that reaches Ray answers 503."""
from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import token_ok
from api.server import check_can_serve
from sweep.service.index import Database, Study
from sweep.service.ray_jobs import ray_auth_token
from sweep.service.settings import from_env
from sweep.study.ray_cluster import free_port

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    data = base / "data"
    (data / "demo").mkdir(parents=True)
    for split in ("train", "eval"):
        (data / "demo" / f"{split}.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    secret = base / "secret"
    secret.mkdir()
    (secret / "train.jsonl").write_text("{}\n")
    (data / "escape").symlink_to(secret)  # inside the root by name, outside by target
    outside = base / "outside"  # relative to the workdir, outside the data roots
    (outside / "modeldir").mkdir(parents=True)
    (outside / "modeldir" / "config.json").write_text("{}")
    (outside / "ds").mkdir()
    (outside / "ds" / "train.csv").write_text("API_KEY=sk-live-123\n")
    (data / "hubish" / "pairs").mkdir(parents=True)  # `hf: hubish/pairs` names this, under the root
    (data / "hubish" / "pairs" / "train.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    return base


def settings_for(base: Path, **overrides):
    values = dict(api_token=TOKEN, workdir=str(base), data_dir=str(base / "svc"), storage_path=str(base / "runs"),
                  ray_address=f"http://127.0.0.1:{free_port()}", data_roots=[str(base / "data")])
    values.update(overrides)
    return from_env({}, **values)


@contextlib.contextmanager
def served(app):
    """`app` on a free loopback port, served by uvicorn in a thread; yields its URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(roots):
    patch = pytest.MonkeyPatch()
    patch.setattr("api.routes.studies.LIST_TTL_S", 0.0)  # these tests write rows behind the service's back
    app = create_app(settings_for(roots))
    with served(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.app_state = app.state
        yield client
    patch.undo()


def demo_config(name: str = "unit", **sections) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["train"].update(max_steps=40, eval_every=20)
    cfg["sweep"].update(num_trials=2, early_terminate=None)
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def fields(response) -> list[str]:
    assert response.status_code == 422, response.text
    return [p["field"] for p in response.json()["detail"]]


# ------------------------------------------------------------------ basics

def test_health_docs_page(server):
    health = server.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for docs in ("/docs", "/redoc"):  # served from our own assets: an air-gapped cluster can read them
        html = server.get(docs)
        assert html.status_code == 200 and "https://" not in html.text, docs
        scripts = re.findall(r'src="([^"]+)"', html.text)
        assert scripts and all(server.get(src).status_code == 200 for src in scripts), scripts
    paths = server.get("/openapi.json").json()["paths"]
    for path in ("/studies", "/studies/{study_id}", "/studies/{study_id}/trials", "/studies/{study_id}/best",
                 "/studies/{study_id}/cancel", "/studies/{study_id}/logs", "/studies/{study_id}/generate",
                 "/studies/{study_id}/generate/stream", "/healthz"):
        assert path in paths
    # the token is a declared bearer scheme (Swagger UI's Authorize button), on every route but /healthz
    operations = [(path, method, op) for path, ops in paths.items() for method, op in ops.items()]
    assert all(op["security"] == [{"HTTPBearer": []}] for path, _, op in operations if path != "/healthz")
    assert "security" not in paths["/healthz"]["get"] and len(operations) >= 9
    page = server.get("/")
    assert page.status_code == 200 and "prefsweep" in page.text
    assert server.get("/static/app.js").status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text


@pytest.mark.parametrize("method,path", [
    ("POST", "/studies"), ("POST", "/studies/x/cancel"), ("POST", "/studies/x/generate"),
    ("POST", "/studies/x/generate/stream"), ("GET", "/studies/x/logs"), ("GET", "/studies"),
    ("GET", "/studies/x"), ("GET", "/studies/x/trials"), ("GET", "/studies/x/best"),
    ("GET", "/studies/bad%0A"),  # the token is checked before the parameters: 401, not 422
])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", TOKEN])
def test_token_required(server, method, path, header):
    headers = {"Authorization": header} if header else {}
    response = server.request(method, path, json=demo_config(), headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_compare():
    assert token_ok(f"Bearer {TOKEN}", TOKEN) and token_ok(f"bearer {TOKEN}", TOKEN)
    assert not token_ok(f"Bearer {TOKEN}x", TOKEN) and not token_ok(None, TOKEN) and not token_ok("Bearer ", "")


def test_read_routes_404_and_422(server):
    assert server.get("/studies", headers=AUTH).json() == {"items": [], "total": 0, "offset": 0, "limit": 50}
    for path in ("/studies/nope", "/studies/nope/trials", "/studies/nope/best"):
        assert server.get(path, headers=AUTH).status_code == 404
    assert server.post("/studies/nope/cancel", headers=AUTH).status_code == 404
    assert server.get("/studies/a%2F..%2Fb", headers=AUTH).status_code in (404, 422)
    assert server.get("/studies/nl%0A", headers=AUTH).status_code == 422  # names are matched whole
    assert fields(server.get("/studies?state=bogus", headers=AUTH)) == ["state"]
    assert fields(server.get("/studies?limit=0", headers=AUTH)) == ["limit"]
    response = server.get("/studies?offset=22243911290915852424052736", headers=AUTH)  # found by schemathesis
    assert fields(response) == ["offset"]


# ------------------------------------------------------------------ config validation

def test_422_names_the_field(server):
    bad = demo_config(train={"max_steps": 0})
    assert fields(server.post("/studies", json=bad, headers=AUTH)) == ["train.max_steps"]
    bad = demo_config(objective={"name": "nonsense"})
    assert "objective.name" in fields(server.post("/studies", json=bad, headers=AUTH))
    bad = demo_config(train={"bogus_key": 1})
    assert fields(server.post("/studies", json=bad, headers=AUTH)) == ["train.bogus_key"]


def test_yaml_body_and_overrides(server):
    text = yaml.safe_dump(demo_config(train={"learning_rate": -1.0}))
    response = server.post("/studies", content=text, headers={**AUTH, "Content-Type": "application/yaml"})
    assert fields(response) == ["train.learning_rate"]
    response = server.post("/studies", params={"set": "sweep.num_trials=0"}, json=demo_config(), headers=AUTH)
    assert fields(response) == ["sweep.num_trials"]
    response = server.post("/studies", content="a: &x [1]\nb: *x\n",
                           headers={**AUTH, "Content-Type": "text/yaml"})
    assert fields(response) == ["(body)"]


def test_bad_bodies(server):
    not_json = server.post("/studies", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert fields(not_json) == ["(body)"]
    assert fields(server.post("/studies", json=[1, 2], headers=AUTH)) == ["(root)"]
    assert server.post("/studies", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}).status_code == 415
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    assert server.post("/studies", content=big, headers={**AUTH, "Content-Type": "application/json"}).status_code == 413


# ------------------------------------------------------------------ path / policy

@pytest.mark.parametrize("path", ["/etc/passwd", "../secret/train.jsonl", "data/../secret/train.jsonl",
                                  "data/escape/train.jsonl", "~/x.jsonl", "file:///etc/passwd", "s3://b/k"])
def test_paths_outside_roots_refused(server, path):
    response = server.post("/studies", json=demo_config(data={"train": {"path": path}}), headers=AUTH)
    assert fields(response) == ["data.train.path"]
    assert "outside the allowed data roots" in response.text or "remote URIs" in response.text


def test_local_model_outside_roots_refused(server, roots):
    response = server.post("/studies", json=demo_config(model={"name_or_path": str(roots / "secret")}), headers=AUTH)
    assert fields(response) == ["model.name_or_path"]
    response = server.post("/studies", json=demo_config(model={"ref_name_or_path": "../secret"}), headers=AUTH)
    assert fields(response) == ["model.ref_name_or_path"]


@pytest.mark.parametrize("key,value", [
    ("data.train.hf", "/some/dir/outside"), ("data.train.hf", "{base}/outside/ds"), ("data.train.hf", "outside/ds"),
    ("data.eval.hf", "../outside/ds"), ("data.train.hf", "data/escape"), ("model.name_or_path", "outside/modeldir"),
    ("model.ref_name_or_path", "outside/modeldir"), ("data.train.path", "outside/ds"),
])
def test_every_kind_of_source_goes_through_the_path_rule(server, roots, key, value):
    cfg, value = demo_config(), value.format(base=roots)
    if key.startswith("data."):
        _, split, kind = key.split(".")
        cfg["data"][split] = {kind: value}  # a data source takes exactly one of path/hf
    else:
        cfg["model"][key.split(".")[1]] = value
    response = server.post("/studies", json=cfg, headers=AUTH)
    assert fields(response) == [key], response.text
    assert "outside the allowed data roots" in response.text and "sk-live" not in response.text


def test_local_names_are_rewritten_to_absolute_paths_and_hub_ids_kept(roots):
    from sweep.service.submitted import prepare_config

    settings = settings_for(roots)
    cfg = prepare_config(demo_config(data={"train": {"hf": "hubish/pairs"}}), [], settings)
    assert cfg.data.train.hf == str(roots / "data" / "hubish" / "pairs")  # under a data root: local
    cfg = prepare_config(demo_config(model={"name_or_path": "Org/some-model"}, data={"train": {"hf": "Dahoas/static-hh"}}),
                         [], settings)
    assert cfg.model.name_or_path == "Org/some-model" and cfg.data.train.hf == "Dahoas/static-hh"  # hub ids


def test_missing_file_inside_roots(server):
    response = server.post("/studies", json=demo_config(data={"eval": {"path": "data/demo/nope.jsonl"}}), headers=AUTH)
    assert fields(response) == ["data.eval.path"] and "no such file" in response.text


def test_server_owned_settings(server):
    cfg = demo_config(model={"trust_remote_code": True})
    assert fields(server.post("/studies", json=cfg, headers=AUTH)) == ["model.trust_remote_code"]
    for section, key in (("storage", "path"), ("storage", "optuna_url"), ("tracking", "mlflow_tracking_uri")):
        cfg = demo_config(**{section: {key: "sqlite:////tmp/elsewhere.db" if "url" in key or "uri" in key else "/tmp/x"}})
        assert fields(server.post("/studies", json=cfg, headers=AUTH)) == [f"{section}.{key}"]
    cfg = demo_config()
    cfg["sweep"]["parameters"]["data.train.path"] = {"values": ["/etc/passwd"]}
    assert "sweep.parameters.data.train.path" in fields(server.post("/studies", json=cfg, headers=AUTH))
    cfg = demo_config()
    cfg["sweep"]["parameters"]["data"] = {"value": {"train": {"path": "/etc/passwd"}}}
    assert "sweep.parameters.data" in fields(server.post("/studies", json=cfg, headers=AUTH))
    cfg = demo_config()
    cfg["sweep"]["parameters"]["model.trust_remote_code"] = {"values": [False, True]}
    assert fields(server.post("/studies", json=cfg, headers=AUTH)) == ["sweep.parameters.model.trust_remote_code"]


def test_trust_remote_code_when_allowed(roots):
    from sweep.service.submitted import prepare_config

    cfg = prepare_config(demo_config(model={"trust_remote_code": True},
                                     data={"train": {"path": "data/demo/train.jsonl"}}), [],
                         settings_for(roots, allow_trust_remote_code=True))
    assert cfg.model.trust_remote_code
    assert cfg.data.train.path == str(roots / "data" / "demo" / "train.jsonl")  # absolute for the job
    assert cfg.data.eval.path == "builtin:demo/eval"  # shipped with prefsweep: as it is
    assert cfg.storage.path == str(roots / "runs")


def test_judges_through_the_api(server, roots):
    """A python judge runs code the request names: refused unless the server allows it. A reward
    model goes through the one path rule like every other model path."""
    from sweep.config.loading import ConfigError
    from sweep.service.submitted import prepare_config

    python = demo_config(evaluation={"judge": {"python": "os:system"}})
    assert fields(server.post("/studies", json=python, headers=AUTH)) == ["evaluation.judge.python"]
    assert prepare_config(python, [], settings_for(roots, allow_python_judges=True)).evaluation.judge.python == "os:system"
    outside = demo_config(evaluation={"judge": {"reward_model": "/etc"}})
    assert fields(server.post("/studies", json=outside, headers=AUTH)) == ["evaluation.judge.reward_model"]
    (roots / "data" / "rm").mkdir(parents=True)
    inside = prepare_config(demo_config(evaluation={"judge": {"reward_model": "data/rm"}}), [], settings_for(roots))
    assert inside.evaluation.judge.reward_model == str(roots / "data" / "rm")  # absolute for the job
    swept = demo_config()
    swept["sweep"]["parameters"]["evaluation.judge"] = {"values": [{"python": "os:system"}]}
    with pytest.raises(ConfigError):
        prepare_config(swept, [], settings_for(roots))


# ------------------------------------------------------------------ launching without Ray

def test_ray_down_is_503_and_leaves_nothing(server):
    response = server.post("/studies", json=demo_config("nora"), headers=AUTH)
    assert response.status_code == 503 and "Ray" in response.json()["detail"]
    assert server.get("/studies/nora", headers=AUTH).status_code == 404  # the name stays free
    assert not (Path(server.app_state.settings.configs_dir) / "nora.yaml").exists()


def test_a_local_ray_that_cannot_start_is_one_line_with_the_fix(roots):
    """No Ray address set and the local dashboard port held by another program (one that
    answers HTTP, one that does not): a 503 of one line naming the settings, nothing started."""
    import http.server
    import socket

    quiet = type("Quiet", (http.server.BaseHTTPRequestHandler,), {"log_message": lambda *a: None})
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for port in (web.server_port, silent.getsockname()[1]):
            settings = settings_for(roots, data_dir=str(roots / f"svc-{port}"), ray_address="",
                                    local_ray_dashboard_port=port)
            with TestClient(create_app(settings)) as client:
                response = client.post("/studies", json=demo_config(f"p{port}"), headers=AUTH)
            detail = response.json()["detail"]
            assert response.status_code == 503 and "\n" not in detail and "Traceback" not in detail, detail
            assert f"127.0.0.1:{port}" in detail and "PREFSWEEP_LOCAL_RAY_DASHBOARD_PORT" in detail, detail
    web.shutdown()


def test_duplicate_is_409(server):
    db: Database = server.app_state.registry.index
    db.add(Study(id="taken", name="taken", config=demo_config("taken"), owner="x", state="finished"))
    response = server.post("/studies", json=demo_config("taken"), headers=AUTH)
    assert response.status_code == 409
    listed = server.get("/studies", params={"state": "finished"}, headers=AUTH).json()
    assert [s["id"] for s in listed["items"]] == ["taken"] and listed["items"][0]["best_value"] is None
    assert server.post("/studies/taken/cancel", headers=AUTH).status_code == 409  # already ended
    assert server.get("/studies/taken/best", headers=AUTH).status_code == 404
    response = server.post("/studies/taken/generate", json={"prompt": "hi"}, headers=AUTH)
    assert response.status_code == 409


def test_generation_limits(server):
    for body in ({"prompt": ""}, {"prompt": "x" * 2001}, {"prompt": "hi", "max_new_tokens": 257},
                 {"prompt": "hi", "temperature": -1}, {"prompt": "hi", "top_p": 0}):
        assert server.post("/studies/taken/generate", json=body, headers=AUTH).status_code == 422, body


@pytest.mark.parametrize("raw", [
    '{"prompt": "hi", "top_p": NaN}', '{"prompt": "hi", "temperature": Infinity}', '{"prompt": "hi", "temperature": -Infinity}',
    '{"prompt": "hi", "max_new_tokens": NaN}', '{"prompt": "\\ud800"}', '{"prompt": "hi", "temperature": false}',
    '{"prompt": "hi", "max_new_tokens": true}', '{"prompt": "hi", "max_new_tokens": 1.5}', '{"prompt": "hi", "top_p": "0.9"}',
    '{"prompt": "hi", "unknown": 1}', '{"prompt": "hi", "\\udc80": NaN}', '{"prompt": ["hi"]}',
])
def test_generation_body_is_strict(server, raw):
    response = server.post("/studies/taken/generate", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert all(p["field"] and p["msg"] for p in response.json()["detail"])  # named, and never the input echoed
    assert "NaN" not in response.text and "Infinity" not in response.text


def test_json_depth_is_bounded_before_any_parser(server):
    for depth in (40, 900, 100_000):
        deep = "[" * depth + "]" * depth
        for path, body in (("/studies", f'{{"name": {deep}}}'), ("/studies/taken/generate", f'{{"prompt": {deep}}}')):
            response = server.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
            assert response.status_code == 422 and "deeper than 32" in response.text, (path, depth)
    strings = '{"prompt": "' + "[" * 1500 + '"}'  # brackets inside strings are text, not nesting
    assert server.post("/studies/taken/generate", content=strings,
                       headers={**AUTH, "Content-Type": "application/json"}).status_code == 409
    big = b'{"prompt": "' + b"x" * (1 << 20) + b'"}'
    assert server.post("/studies/taken/generate", content=big,
                       headers={**AUTH, "Content-Type": "application/json"}).status_code == 413


def test_yaml_alias_chain_in_set_is_refused_quickly(server):
    chain = "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
            "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    started = time.monotonic()
    response = server.post("/studies", params={"set": f"data.columns={chain}"}, json=demo_config(), headers=AUTH)
    assert fields(response) == ["data.columns"] and "aliases" in response.text
    assert time.monotonic() - started < 2


def test_responses_mask_passwords_and_health_says_nothing_of_the_infrastructure(server):
    db: Database = server.app_state.registry.index
    url = "postgresql+psycopg://prefsweep:TOPSECRET@db:5432/optuna"
    db.add(Study(id="masked", name="masked", config=demo_config("masked", storage={"optuna_url": url}), owner="x",
                 state="failed", error=f"OperationalError: cannot reach {url}"))
    for path in ("/studies/masked", "/studies"):
        response = server.get(path, headers=AUTH)
        assert response.status_code == 200 and "TOPSECRET" not in response.text and "prefsweep:***@db" in response.text
    health = server.get("/healthz").json()
    assert set(health) == {"status", "version", "database"}


def test_unreachable_store_is_503_with_retry_after(server, roots):
    """A study whose Optuna store refuses connections (here: a Postgres port nobody listens on)."""
    import json

    name, url = "pgdown", f"postgresql+psycopg://u:TOPSECRET@127.0.0.1:{free_port()}/optuna"
    config = demo_config(name, storage={"path": str(roots / "runs"), "optuna_url": url})
    record = {"name": name, "config": config, "tracking_uri": f"sqlite:///{roots}/runs/mlflow.db",
              "experiment_id": "0", "parent_run_id": "x", "optuna_url": url, "state": "finished"}
    (roots / "runs" / name).mkdir(parents=True)
    (roots / "runs" / name / "study.json").write_text(json.dumps(record))  # the service indexes it by itself
    response = server.get(f"/studies/{name}/trials", headers=AUTH)
    assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
    assert "TOPSECRET" not in response.text
    listed = server.get("/studies", params={"state": "finished"}, headers=AUTH)  # the others still list
    assert listed.status_code == 200 and "TOPSECRET" not in listed.text
    assert [s["progress"] for s in listed.json()["items"] if s["id"] == name] == [None]


def test_service_files_are_owner_only(server, roots):
    import stat

    data_dir = Path(server.app_state.settings.data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "prefsweep-api.db").stat().st_mode) == 0o600
    assert not (data_dir / "configs").exists() or stat.S_IMODE((data_dir / "configs").stat().st_mode) == 0o700


def test_list_pages_are_shared_for_a_moment(server, monkeypatch):
    """GET /studies is computed once per LIST_TTL_S for everyone who polls it."""
    monkeypatch.setattr("api.routes.studies.LIST_TTL_S", 60.0)
    before = server.get("/studies", params={"limit": 7}, headers=AUTH).json()
    server.app_state.registry.index.add(Study(id="late", name="late", config=demo_config("late"), owner="x", state="finished"))
    assert server.get("/studies", params={"limit": 7}, headers=AUTH).json() == before  # the shared page
    monkeypatch.setattr("api.routes.studies.LIST_TTL_S", 0.0)
    assert "late" in [s["id"] for s in server.get("/studies", params={"limit": 7}, headers=AUTH).json()["items"]]


def test_too_many_running_is_429(roots):
    settings = settings_for(roots, data_dir=str(roots / "svc429"), max_running_studies=1)
    with TestClient(create_app(settings)) as client:
        client.app.state.registry.index.add(Study(id="busy", name="busy", config=demo_config("busy"), owner="x",
                                      state="running", submission_id=None))
        response = client.post("/studies", json=demo_config("another"), headers=AUTH)
        assert response.status_code == 429


# ------------------------------------------------------------------ settings and startup

def test_settings_from_env(tmp_path):
    env = {"PREFSWEEP_API_TOKEN": "t", "PREFSWEEP_MAX_RUNNING_STUDIES": "3", "PREFSWEEP_WORKDIR": str(tmp_path),
           "PREFSWEEP_DATA_ROOTS": f"data:{tmp_path}/more", "PREFSWEEP_ALLOW_TRUST_REMOTE_CODE": "yes",
           "PREFSWEEP_DB_URL": ""}
    s = from_env(env)
    assert s.api_token == "t" and s.max_running_studies == 3 and s.allow_trust_remote_code
    assert s.data_roots == [tmp_path / "data", tmp_path / "more"]
    assert s.database_url == f"sqlite:///{tmp_path}/runs/.api/prefsweep-api.db"
    with pytest.raises(ValueError):
        from_env({"PREFSWEEP_ALLOW_TRUST_REMOTE_CODE": "maybe"})


def test_generated_token_is_kept(tmp_path):
    s = from_env({}, workdir=str(tmp_path))
    token, generated = s.ensure_token()
    assert generated and len(token) > 20 and oct((tmp_path / "runs/.api/api_token").stat().st_mode)[-3:] == "600"
    assert from_env({}, workdir=str(tmp_path)).ensure_token() == (token, False)


def test_ray_token_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    (tmp_path / "tok").write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert ray_auth_token(from_env({})) == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_auth_token(from_env({})) == "from-env"
    assert ray_auth_token(from_env({}, ray_auth_token="explicit")) == "explicit"


def test_refuses_public_host_without_token(tmp_path):
    with pytest.raises(SystemExit):
        check_can_serve("0.0.0.0", from_env({}, workdir=str(tmp_path)))
    check_can_serve("0.0.0.0", from_env({}, workdir=str(tmp_path), api_token="t"))
    check_can_serve("127.0.0.1", from_env({}, workdir=str(tmp_path)))
    proc = subprocess.run([sys.executable, "-m", "sweep", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode != 0 and "PREFSWEEP_API_TOKEN" in proc.stderr
