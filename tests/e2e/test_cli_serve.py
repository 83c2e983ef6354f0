"""Studies started outside the REST service are the service's too. One small `prefsweep run`
(2 trials of 20 steps) with `prefsweep serve` on the same storage: listed with owner `cli` and
`running` while its driver runs, found (not 404) while a launch of its name is 409, not
cancellable from the service, then finished with its trials, best trial and generation, and
on the page. Then a study submitted with `ray job submit`: listed with owner `job` and its Ray
job, and cancel stops that job."""
from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest
from browser import ARTIFACTS, CHROMIUM, chromium_page, open_study_list
from helpers import BIN, REPO, sweep_args
from processes import wait_for

try:
    from .api_service import TOKEN, Service, small_config
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import TOKEN, Service, small_config

pytestmark = pytest.mark.ray
NAME, JOB = "cli-run", "job-run"
SMALL = ["--set", "sweep.num_trials=2", "--set", "sweep.early_terminate=null", "--set", "train.max_steps=20",
         "--set", "train.eval_every=10", "--set", "train.logging_steps=10"]


def listed(svc: Service) -> dict[str, dict]:
    response = svc.client.get("/studies")
    assert response.status_code == 200, response.text
    return {s["name"]: s for s in response.json()["items"]}


def ray_client(dashboard: str):
    from ray.job_submission import JobSubmissionClient

    from sweep.service.ray_jobs import ray_auth_token
    from sweep.service.settings import from_env

    token = ray_auth_token(from_env({}))
    return JobSubmissionClient(dashboard, headers={"Authorization": f"Bearer {token}"} if token else {})


def ray_cli_env(env: dict) -> dict:
    """`ray job ...` sends the cluster token only in token mode; a cluster `ray start` began
    where a token exists (~/.ray/auth_token) wants it."""
    from sweep.study.ray_cluster import ray_auth_token

    return {**env, "RAY_AUTH_MODE": "token"} if ray_auth_token() and "RAY_AUTH_MODE" not in env else env


def job_status(dashboard: str, submission: str) -> str:
    status = ray_client(dashboard).get_job_status(submission)
    return str(getattr(status, "value", status))


def test_cli_and_ray_job_studies_in_the_service(cli, ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([str(BIN / "prefsweep"), "run", *sweep_args(storage, NAME, *SMALL)], cwd=REPO,
                              env=cli.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    svc = Service(tmp_path, ray_cluster["dashboard"]).start()  # its storage: tmp_path/runs, as the CLI's
    submission = None
    try:
        running = wait_for(lambda: listed(svc).get(NAME, {}).get("state") == "running" and listed(svc)[NAME],
                           300, "the CLI study listed as running", driver, interval=1)
        assert running["owner"] == "cli" and running["progress"]["total"] == 2
        detail = svc.client.get(f"/studies/{NAME}").json()
        assert detail["state"] == "running" and detail["ray"]["submission_id"] is None
        assert svc.client.post("/studies", json=small_config(NAME)).status_code == 409  # and GET is 200: one registry
        refused = svc.client.post(f"/studies/{NAME}/cancel")
        assert refused.status_code == 409 and "prefsweep run" in refused.json()["detail"]
        assert svc.client.get(f"/studies/{NAME}/logs").status_code == 404

        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-4000:]
        study = svc.wait(NAME, lambda s: s["state"] != "running", timeout=30, every=0.5)
        assert study["state"] == "finished" and study["owner"] == "cli" and study["ended_at"], study
        assert study["progress"] == {"done": 2, "total": 2} and study["best"]["value"] == study["best_value"]
        trials = svc.client.get(f"/studies/{NAME}/trials").json()["trials"]
        assert [t["state"] for t in trials] == ["finished", "finished"] and all(t["curves"] for t in trials)
        best = svc.client.get(f"/studies/{NAME}/best").json()
        assert best["trial_id"] == study["best"]["trial_id"] and best["checkpoint_path"].startswith(str(storage))
        generated = svc.client.post(f"/studies/{NAME}/generate", json={"prompt": "User: Tea?\nAssistant:",
                                                                        "max_new_tokens": 8, "temperature": 0})
        assert generated.status_code == 200 and generated.json()["trial_id"] == best["trial_id"], generated.text

        if CHROMIUM.exists():
            with chromium_page() as page:
                row = open_study_list(page, svc.url, TOKEN, NAME)
                assert "finished" in row.inner_text() and "cli" in row.inner_text()
                row.locator("a").click()
                page.locator("#trials tbody tr").nth(1).wait_for()
                assert page.locator("#study-state").inner_text() == "finished" and page.locator("#cancel").is_hidden()
                page.screenshot(path=str(ARTIFACTS / "web-cli-study.png"), full_page=True)
                assert page.errors == []

        # `ray job submit`: the driver records its Ray job, the service can stop it.
        submission = f"{JOB}-{secrets.token_hex(3)}"
        long = ["--set", "sweep.num_trials=2", "--set", "train.max_steps=2000", "--set", "train.eval_every=1000"]
        cluster = ray_cluster["dashboard"]
        submitted = subprocess.run(
            [str(BIN / "ray"), "job", "submit", f"--address={cluster}", f"--submission-id={submission}", "--no-wait",
             "--", str(BIN / "prefsweep"), "run", str(REPO / "configs" / "demo.yaml"), "--set", f"name={JOB}",
             "--set", f"storage.path={storage}", *long],
            env=ray_cli_env(cli.env), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        try:
            wait_for(lambda: JOB in listed(svc), 300, "the Ray job's study listed", interval=1)
            job = svc.wait(JOB, lambda s: s["state"] == "running" and s["ray"]["submission_id"], timeout=120, every=1)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- job log\n{ray_client(cluster).get_job_logs(submission)[-4000:]}") from None
        assert job["owner"] == "job" and job["ray"]["submission_id"] == submission, job
        cancelled = svc.client.post(f"/studies/{JOB}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        wait_for(lambda: job_status(cluster, submission) == "STOPPED", 60, "Ray to stop the job")
        time.sleep(3)  # the stopped driver's last save comes and goes
        assert svc.client.get(f"/studies/{JOB}").json()["state"] == "cancelled"
        status = json.loads(cli("status", JOB, "--storage", str(storage), "--json").stdout)
        assert status["state"] == "interrupted"  # its driver is gone: `prefsweep resume` continues it
    finally:
        if driver.poll() is None:
            driver.kill()
        if submission and job_status(ray_cluster["dashboard"], submission) in ("PENDING", "RUNNING"):
            subprocess.run([str(BIN / "ray"), "job", "stop", f"--address={ray_cluster['dashboard']}", submission],
                           env=ray_cli_env(cli.env), capture_output=True, timeout=120)
        svc.stop()

