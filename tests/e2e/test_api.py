"""The REST service over real HTTP against the session's real Ray cluster: launch the demo
study and a second one, cancel the second mid-run (its finished trial kept), read trials,
curves and best of the first, generate text, restart the service and find both as they were.

The tests run in file order and share one service (module fixture)."""
from __future__ import annotations

import json
import time

import pytest

try:
    from .api_service import AUTH, DEMO, Service, shared_base
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import AUTH, DEMO, Service, shared_base

pytestmark = pytest.mark.ray
SECOND = "cancel-me"


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    svc = Service(shared_base(tmp_path_factory), ray_cluster["dashboard"]).start()
    yield svc
    svc.stop()


def trials_of(service: Service, name: str) -> list[dict]:
    response = service.client.get(f"/studies/{name}/trials")
    assert response.status_code == 200, response.text
    return response.json()["trials"]


def test_launch_two_and_limit(service):
    if service.client.get(f"/studies/{DEMO}").status_code == 404:
        created = service.launch(DEMO)
        assert created.status_code == 201, created.text
        assert created.json()["id"] == DEMO and created.json()["submission_id"]
    assert service.launch(DEMO).status_code == 409
    # Short trials (one evaluation each), more than we let it run.
    second = service.launch(SECOND, {"train.max_steps": 20, "train.eval_every": 20, "sweep.num_trials": 4})
    assert second.status_code == 201, second.text
    third = service.launch("one-too-many")
    assert third.status_code == 429, third.text  # PREFSWEEP_MAX_RUNNING_STUDIES=2
    page = service.client.get("/studies", params={"limit": 1}).json()
    assert page["total"] >= 2 and len(page["items"]) == 1


def test_cancel_second_mid_run(service, ray_cluster):
    deadline = time.time() + 400
    while time.time() < deadline:
        trials = trials_of(service, SECOND)
        if any(t["state"] == "finished" for t in trials):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"no trial of {SECOND} finished: {trials}\n{service.log_tail()}")
    assert service.anon.post(f"/studies/{SECOND}/cancel").status_code == 401
    response = service.client.post(f"/studies/{SECOND}/cancel", headers=AUTH)
    assert response.status_code == 200, response.text
    study = response.json()
    assert study["state"] == "cancelled" and study["ended_at"]
    assert service.client.post(f"/studies/{SECOND}/cancel", headers=AUTH).status_code == 409
    # Ray really stopped the job.
    from ray.job_submission import JobSubmissionClient

    from sweep.service.ray_jobs import ray_auth_token
    from sweep.service.settings import from_env

    token = ray_auth_token(from_env({}))
    client = JobSubmissionClient(ray_cluster["dashboard"], headers={"Authorization": f"Bearer {token}"} if token else {})
    submission = study["ray"]["submission_id"]
    for _ in range(60):
        if str(client.get_job_status(submission)) in ("STOPPED", "JobStatus.STOPPED"):
            break
        time.sleep(1)
    assert str(client.get_job_status(submission)).endswith("STOPPED")
    kept = [t for t in trials_of(service, SECOND) if t["state"] == "finished"]
    assert kept and kept[0]["value"] is not None
    assert service.client.get(f"/studies/{SECOND}").json()["state"] == "cancelled"


def test_demo_finishes_with_trials_and_best(service):
    study = service.ensure_demo()
    assert study["state"] == "finished", study
    assert study["progress"] == {"done": 2, "total": 2}
    assert study["best"] and study["best_value"] == study["best"]["value"]
    assert study["mlflow"]["run_id"] and study["ray"]["submission_id"].startswith(f"prefsweep-{DEMO}-")
    trials = trials_of(service, DEMO)
    metric = study["metric"]["name"]
    assert len(trials) == 2 and {t["state"] for t in trials} == {"finished"}
    for t in trials:
        assert set(t["params"]) >= {"train.learning_rate", "objective.beta"}
        assert t["value"] is not None and t["step"] == 40
        assert [s for s, _ in t["intermediate_values"]] == [1, 2]  # Optuna: one per evaluation
        assert [s for s, _ in t["curves"][metric]] == [20, 40]  # MLflow: per step
        assert len(t["curves"]["loss"]) >= 2
    best = service.client.get(f"/studies/{DEMO}/best").json()
    assert best["trial_id"] == study["best"]["trial_id"]
    assert best["value"] == max(t["value"] for t in trials)
    logs = service.client.get(f"/studies/{DEMO}/logs", params={"lines": 50}, headers=AUTH).json()
    assert logs["lines"] and len(logs["lines"]) <= 50


def test_generations_side_by_side(service):
    service.ensure_demo()
    assert service.anon.get(f"/studies/{DEMO}/generations").status_code == 401
    found = service.client.get(f"/studies/{DEMO}/generations").json()
    assert found["judge"] == "builtin:demo" and len(found["trials"]) == 2
    for trial in found["trials"]:
        assert trial["step"] == 40 and len(trial["generations"]) == 16
        assert 0 <= trial["metrics"]["eval/gen/win_rate"] <= 1
        row = trial["generations"][0]
        assert row["prompt"] and row["reference"] and row["score"] is not None and row["reference_score"] is not None
    first = found["trials"][0]["trial_id"]
    one = service.client.get(f"/studies/{DEMO}/generations", params={"trials": first}).json()
    assert [t["trial_id"] for t in one["trials"]] == [first]
    assert service.client.get(f"/studies/{DEMO}/generations", params={"trials": "nope"}).status_code == 404
    assert service.client.get(f"/studies/{DEMO}/generations", params={"trials": "../x"}).status_code == 422


def test_generate(service):
    body = {"prompt": "User: Can you give me a tip about tea?\nAssistant:", "max_new_tokens": 12, "temperature": 0}
    assert service.anon.post(f"/studies/{DEMO}/generate", json=body).status_code == 401
    assert service.anon.get(f"/studies/{DEMO}").status_code == 401  # reads need it too
    first = service.client.post(f"/studies/{DEMO}/generate", json=body, headers=AUTH)
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["new_tokens"] >= 1 and isinstance(out["text"], str) and out["prompt_tokens"] > 5
    started = time.time()
    again = service.client.post(f"/studies/{DEMO}/generate", json=body, headers=AUTH).json()
    assert again["text"] == out["text"] and time.time() - started < 5  # greedy, and the model is cached
    with service.client.stream("POST", f"/studies/{DEMO}/generate/stream", json=body, headers=AUTH) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = "".join(stream.iter_text()).split("\n\n")
    assert events[0].startswith("event: meta") and any(e.startswith("event: done") for e in events)
    text = "".join(json.loads(e[len("data: "):])["text"] for e in events if e.startswith("data: "))
    assert text.strip() == out["text"].strip()
    too_long = {"prompt": "x" * 5000}
    assert service.client.post(f"/studies/{DEMO}/generate", json=too_long, headers=AUTH).status_code == 422


def test_restart_keeps_both(service):
    service.restart()
    states = {s["id"]: s["state"] for s in service.client.get("/studies").json()["items"]}
    assert states[DEMO] == "finished" and states[SECOND] == "cancelled"
    assert "one-too-many" not in states
    cancelled = service.client.get("/studies", params={"state": "cancelled"}).json()["items"]
    assert [s["id"] for s in cancelled] == [SECOND]
    assert any(t["state"] == "finished" for t in trials_of(service, SECOND))
    assert len(trials_of(service, DEMO)) == 2
