"""One registry of studies, without Ray: study records under storage (written as the driver
writes them) indexed with their owner, a driver's liveness, the Ray job states (Ray's client
answered from a table: the real RayJobs code runs over it), cancel, and records that break
the rules kept out. The real drivers, jobs and HTTP are in tests/e2e/test_cli_serve.py and
the cluster tier."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweep.cli.main import main as cli_main
from sweep.config.schema import PrefsweepConfig
from sweep.service.index import Study
from sweep.service.registry import Registry, StudyConflict
from sweep.service.settings import from_env
from sweep.service.studies import study_status
from sweep.service.study_state import indexed_state
from sweep.storage.record import StudyRecord
from sweep.study import liveness
from sweep.study.ray_cluster import free_port


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Every read looks again (the service looks at most every 2 s)."""
    monkeypatch.setattr("sweep.service.registry.SYNC_S", 0.0)
    monkeypatch.setattr("sweep.service.registry.RECONCILE_S", 0.0)


class FakeRayClient:
    """The JobSubmissionClient calls RayJobs makes, answered from a table of job statuses."""

    def __init__(self, statuses: dict, logs: str = "line 1\nTraceback: boom\n"):
        self.statuses, self.log_text, self.stopped = statuses, logs, []

    def _status(self, submission_id):
        value = self.statuses.get(submission_id, RuntimeError("Request failed with status code 404: does not exist"))
        if isinstance(value, Exception):
            raise value
        return value

    def get_job_info(self, submission_id):
        return SimpleNamespace(status=self._status(submission_id), message="\x1b[31mmessage from Ray\x1b[0m")

    def get_job_logs(self, submission_id):
        self._status(submission_id)
        return self.log_text

    def stop_job(self, submission_id):
        self._status(submission_id)
        self.stopped.append(submission_id)
        self.statuses[submission_id] = "STOPPED"


def registry(tmp_path: Path, ray: FakeRayClient | None = None, **settings) -> Registry:
    values = dict(api_token="t", workdir=str(tmp_path), data_dir=str(tmp_path / "svc"),
                  storage_path=str(tmp_path / "runs"), ray_address=f"http://127.0.0.1:{free_port()}")
    values.update(settings)
    reg = Registry(from_env({}, **values))
    reg.jobs._client = ray  # None: RayJobs connects as it would (to nothing here)
    return reg


def record(storage: Path, name: str, *, driven: bool = True, **fields) -> StudyRecord:
    """A study record as the driver writes it: stamped by this process (alive) unless `driven` is False."""
    rec = StudyRecord(name=name, config=PrefsweepConfig(name=name).model_dump(mode="json"),
                      tracking_uri=f"sqlite:///{storage}/mlflow.db", experiment_id="0", parent_run_id="p",
                      optuna_url=f"sqlite:///{storage}/optuna.db")
    if driven:
        liveness.stamp(rec)
    for key, value in fields.items():
        setattr(rec, key, value)
    rec.save(str(storage))
    return rec


def rewrite(storage: Path, rec: StudyRecord, **fields) -> None:
    """Change a record on disk behind the driver's back (a time in the past, a dead pid)."""
    data = {**asdict(rec), **fields}
    (storage / rec.name / "study.json").write_text(json.dumps(data))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def listed(reg: Registry) -> dict[str, dict]:
    return {s["name"]: s for s in reg.page(None, 0, 200)["items"]}


def test_studies_run_elsewhere_are_indexed_with_their_owner_as_they_appear(tmp_path, monkeypatch):
    storage = tmp_path / "runs"
    record(storage, "from-cli")
    reg = registry(tmp_path)
    study = listed(reg)["from-cli"]
    assert (study["owner"], study["state"], study["submission_id"]) == ("cli", "running", None)
    assert study["progress"] == {"done": 0, "total": 8} and study["metric"]["name"] == "eval/rewards/accuracies"
    version = reg.version
    listed(reg)
    assert reg.version == version  # nothing new: nothing written
    record(storage, "later", owner="alice")  # no restart needed
    assert listed(reg)["later"]["owner"] == "alice"
    # A study asked for by name a moment after its driver wrote its record is found, however recently we looked.
    reg_slow = registry(tmp_path)
    listed(reg_slow)
    monkeypatch.setattr("sweep.service.registry.SYNC_S", 60.0)
    record(storage, "just-now")
    assert reg_slow.get("just-now").owner == "cli"
    assert study_status("from-cli", str(storage))["state"] == "running"


def test_a_driver_that_died_shows_interrupted_and_a_resumed_one_running(tmp_path):
    storage = tmp_path / "runs"
    rec = record(storage, "gone")
    reg = registry(tmp_path)
    assert listed(reg)["gone"]["state"] == "running"
    rewrite(storage, rec, driver={**rec.driver, "pid": dead_pid()})  # killed on this machine: seen at once
    study = listed(reg)["gone"]
    assert study["state"] == "interrupted" and "prefsweep resume gone" in study["error"] and study["ended_at"]
    assert study_status("gone", str(storage))["state"] == "interrupted"  # `prefsweep status` says the same
    # On another node: only the heartbeat tells (fresh: running; older than STALE_AFTER_S: interrupted).
    elsewhere = {**rec.driver, "machine": "other-node|boot|pid:[1]", "pid": 1}
    rewrite(storage, rec, driver=elsewhere, updated=time.time())
    assert listed(reg)["gone"]["state"] == "running"
    rewrite(storage, rec, driver=elsewhere, updated=time.time() - liveness.STALE_AFTER_S - 5)
    assert listed(reg)["gone"]["state"] == "interrupted"
    # Resumed (a new driver stamps and saves it), then finished by that driver.
    resumed = record(storage, "gone")
    assert listed(reg)["gone"]["state"] == "running" and listed(reg)["gone"]["ended_at"] is None
    resumed.state = "finished"
    resumed.save(str(storage))
    study = listed(reg)["gone"]
    assert study["state"] == "finished" and study["ended_at"].timestamp() == pytest.approx(resumed.updated, abs=1e-3)
    # A record from before heartbeats (no driver stamp) says what it says.
    record(storage, "legacy", driven=False)
    assert listed(reg)["legacy"]["state"] == "running"


def test_liveness_and_who_started_it(tmp_path, monkeypatch):
    monkeypatch.delenv(liveness.RAY_JOB_CONFIG_ENV, raising=False)
    rec = record(tmp_path, "me")
    assert liveness.alive(rec) and rec.owner == "cli" and rec.submission_id is None
    assert liveness.alive(StudyRecord(**{**asdict(rec), "driver": None})) is None
    reused = {**rec.driver, "started": time.time() - 3600}  # our pid, but our process started after that
    assert liveness.alive(StudyRecord(**{**asdict(rec), "driver": reused})) is False
    stale = StudyRecord(**{**asdict(rec), "updated": time.time() - liveness.STALE_AFTER_S - 1})
    assert liveness.alive(stale) is False and liveness.record_state(stale)[0] == "interrupted"
    job = {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_Ab1", "job_name": "raysubmit_Ab1"}}
    monkeypatch.setenv(liveness.RAY_JOB_CONFIG_ENV, json.dumps(job))
    assert (record(tmp_path, "j").owner, record(tmp_path, "j2").submission_id) == ("job", "raysubmit_Ab1")
    job["metadata"]["prefsweep.owner"] = "alice"  # what the REST service submits with
    monkeypatch.setenv(liveness.RAY_JOB_CONFIG_ENV, json.dumps(job))
    assert record(tmp_path, "a").owner == "alice"
    job["metadata"]["prefsweep.owner"] = "not a name\n"
    monkeypatch.setenv(liveness.RAY_JOB_CONFIG_ENV, json.dumps(job))
    assert record(tmp_path, "b").owner == "job"
    rec.owner = "cli"
    liveness.stamp(rec)  # a resume in a Ray job: still started by the CLI, now driven by that job
    assert (rec.owner, rec.submission_id) == ("cli", "raysubmit_Ab1")


def test_records_that_break_the_rules_are_not_indexed(tmp_path, caplog):
    storage = tmp_path / "runs"
    good = record(storage, "good")
    secret = "postgresql://u:TOPSECRET@db/x"
    for name, fields in {"badowner": {"owner": secret}, "badstate": {"state": "exploded"},
                         "badsub": {"submission_id": "x\ny"}, "badname": {"name": "other"},
                         "badtime": {"updated": float("nan")},
                         "badconfig": {"config": {**good.config, "train": {"max_steps": -1}}}}.items():
        (storage / name).mkdir()
        (storage / name / "study.json").write_text(json.dumps({**asdict(good), "name": name, **fields}))
    (storage / "notjson").mkdir()
    (storage / "notjson" / "study.json").write_text("{" + secret)
    (storage / "extra").mkdir()
    (storage / "extra" / "study.json").write_text(json.dumps({**asdict(good), "name": "extra", "x": 1}))
    reg = registry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="prefsweep.api"):
        assert set(listed(reg)) == {"good"}
    assert "TOPSECRET" not in caplog.text and "badowner" in caplog.text and "badconfig" in caplog.text
    time.sleep(2.1)  # past RACY_S: the files are settled
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prefsweep.api"):
        assert set(listed(reg)) == {"good"}
    assert "badowner" not in caplog.text  # said once per change of the file, not on every look


def test_ray_job_states_of_studies_launched_here(tmp_path):
    cases = {"a": ("SUCCEEDED", "finished"), "b": ("FAILED", "failed"), "c": ("STOPPED", "cancelled"),
             "d": ("RUNNING", "running"), "e": (None, "interrupted")}  # None: Ray does not know the job
    ray = FakeRayClient({f"sub-{n}": status for n, (status, _) in cases.items() if status},
                        logs="\x1b[36m(pid=1)\x1b[0m line 1\nTraceback: boom\n")
    reg = registry(tmp_path, ray)
    for name in cases:
        reg.index.add(Study(id=name, name=name, config={}, owner="x", state="pending", submission_id=f"sub-{name}"))
    reg.reconcile()
    for name, (_, state) in cases.items():
        assert reg.index.get(name).state == state, name
    failed = reg.index.get("b").error
    assert "boom" in failed and "message from Ray" in failed and "\x1b" not in failed  # plain text
    assert reg.index.get("a").ended_at is not None and reg.index.get("d").started_at
    reg.index.add(Study(id="f", name="f", config={}, owner="x", state="running", submission_id="sub-f"))
    ray.statuses.update({"sub-d": ConnectionError("down"), "sub-f": ConnectionError("down")})
    reg.reconcile()
    assert reg.index.get("f").state == "running"  # Ray out of reach: unknown stays as it was
    ray.statuses["sub-d"] = "RUNNING"
    reg.jobs._client = ray  # RayJobs drops a client that failed (and would connect again)
    assert reg.logs("d", 1)["lines"] == ["Traceback: boom"]
    assert reg.logs("d", 5)["lines"][0] == "(pid=1) line 1"  # the page's log panel shows text, not escapes


def test_cancel_stops_ray_jobs_only_and_stays_cancelled_for_that_run(tmp_path, monkeypatch):
    storage = tmp_path / "runs"
    ray = FakeRayClient({"raysubmit_1": "RUNNING"})
    reg = registry(tmp_path, ray)
    record(storage, "cli-run")
    with pytest.raises(StudyConflict, match="prefsweep run"):
        reg.cancel("cli-run")
    driver = record(storage, "as-job", owner="job", submission_id="raysubmit_1")
    assert listed(reg)["as-job"]["submission_id"] == "raysubmit_1"
    assert reg.cancel("as-job")["state"] == "cancelled" and ray.stopped == ["raysubmit_1"]
    driver.state, driver.error = "interrupted", "interrupted with 1/8 trials ended"  # the dying driver's last save
    driver.save(str(storage))
    assert listed(reg)["as-job"]["state"] == "cancelled"
    with pytest.raises(StudyConflict, match="already ended"):
        reg.cancel("as-job")
    record(storage, "as-job", owner="job")  # `prefsweep resume as-job`: a new run
    assert listed(reg)["as-job"]["state"] == "running"
    # A job the service's cluster does not know, or no cluster to ask: say where to stop it.
    record(storage, "elsewhere", owner="job", submission_id="raysubmit_2")
    with pytest.raises(StudyConflict, match="ray job stop raysubmit_2"):
        reg.cancel("elsewhere")
    lone = registry(tmp_path, ray_address=None, local_ray_dashboard_port=free_port())
    with pytest.raises(StudyConflict, match="not attached"):
        lone.cancel("elsewhere")
    assert lone.get("elsewhere").state == "running"  # and nothing was started to ask


def test_a_launched_study_follows_its_record_once_the_driver_writes_it(tmp_path):
    storage = tmp_path / "runs"
    reg = registry(tmp_path, FakeRayClient({"prefsweep-x-1": "RUNNING"}))
    reg.index.add(Study(id="x", name="x", config=PrefsweepConfig(name="x").model_dump(mode="json"), owner="alice",
                        state="pending", submission_id="prefsweep-x-1"))
    assert listed(reg)["x"]["state"] == "running"  # Ray: the job runs, no record yet
    record(storage, "x", owner="alice", submission_id="prefsweep-x-1")
    study = listed(reg)["x"]
    assert (study["state"], study["owner"], study["progress"]["total"]) == ("running", "alice", 8)


def test_the_state_rule():
    now = time.time()
    rec = StudyRecord(name="s", config={}, tracking_uri="", experiment_id="", parent_run_id="", optuna_url="",
                      created=now - 100, updated=now - 5, driver={"started": now - 50, "machine": "elsewhere"})

    def row(state, ended=None):
        from datetime import datetime, timezone

        return Study(state=state, ended_at=None if ended is None else datetime.fromtimestamp(ended, timezone.utc))

    assert indexed_state(rec, None, None, now) == ("running", None)
    assert indexed_state(rec, row("pending"), ("RUNNING", None), now) == ("running", None)
    assert indexed_state(rec, row("running"), ("FAILED", "boom"), now) == ("failed", "boom")  # Ray saw it die
    assert indexed_state(rec, row("running"), ("GONE", None), now) == ("running", None)  # not its cluster: heartbeat
    assert indexed_state(rec, row("cancelled", now - 10), None, now) is None  # that run was cancelled
    assert indexed_state(rec, row("cancelled", now - 60), None, now) == ("running", None)  # a later run
    assert indexed_state(rec, row("interrupted", now - 1), None, now) is None  # nothing new since
    assert indexed_state(rec, row("interrupted", now - 9), None, now) == ("running", None)  # it beat again
    done = StudyRecord(**{**asdict(rec), "state": "failed", "error": "no trial reported the sweep metric"})
    assert indexed_state(done, row("running"), ("FAILED", "exit 1"), now) == ("failed", done.error)  # the record knows more


def test_resume_refuses_a_study_whose_driver_runs(tmp_path, capsys):
    storage = tmp_path / "runs"
    record(storage, "busy")
    assert cli_main(["resume", "busy", "--storage", str(storage)]) == 1
    assert "is running (driver pid" in capsys.readouterr().out
