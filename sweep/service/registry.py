"""One registry of studies: every study under the service's storage, however it was started
(the REST API, `prefsweep run`, `ray job submit`, a resume), with who started it (`owner`).

The study record (`NAME/study.json`, written by the driver) is the source; the service's index
(sweep.service.index) is what it lists, filters and pages, kept in step with
- the records (`sync`): the ones whose file changed since the last look, at most every SYNC_S
  (and a study asked for by name at once), so a study appears without a restart;
- the drivers' liveness (sweep.study.liveness): a `running` record whose driver is gone is
  `interrupted`;
- Ray (`reconcile`): pending and running studies that run as Ray jobs, at most every RECONCILE_S.
`sweep.service.study_state.indexed_state` is the rule that joins them. The routes read and act through `Registry`; its
errors say what went wrong, api.errors which HTTP status that is.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.exc import IntegrityError

from sweep.config.loading import dump_yaml
from sweep.config.redact import mask_url, private_dir, write_private
from sweep.config.schema import NAME_PATTERN
from sweep.service import studies as service
from sweep.service.index import FINAL_STATES, Database, Study, aware
from sweep.service.ray_jobs import JobNotFound, RayJobs, RayUnavailable, log_tail
from sweep.service.settings import Settings
from sweep.service.study_state import GONE, Job, ended_at, indexed_state, job_state, record_problems, run_started, utc
from sweep.service.submitted import parse_config_body, prepare_config
from sweep.storage.databases import store_unavailable
from sweep.storage.files import file_stamps, join, list_names
from sweep.storage.record import STUDY_FILE, StudyRecord, load_record
from sweep.storage.record import exists as study_exists

log = logging.getLogger("prefsweep.api")
SYNC_S = 2.0  # records under storage are looked at at most this often (per study, and for lists)
RECONCILE_S = 2.0  # unfinished Ray-job studies are checked with Ray at most this often
RACY_S = 2.0


class NoSuchStudy(LookupError):
    pass


class StudyConflict(RuntimeError):
    """The request does not fit the study's state (it exists, it ended, it is not a Ray job)."""


class TooManyStudies(RuntimeError):
    pass


class NoJobLog(LookupError):
    pass


class Registry:
    def __init__(self, settings: Settings):
        private_dir(settings.data_dir)  # the token, the database, submitted configs, exports
        self.settings = settings
        self.index = Database(settings.database_url)
        self.jobs = RayJobs(settings)
        self.version = 0  # goes up whenever the index changes, so cached lists are stale at once
        self._launching = threading.Lock()
        self._syncing = threading.Lock()
        self._records: dict[str, tuple[tuple, StudyRecord | None]] = {}  # name -> (file stamp, record) as last read
        self._jobs: dict[str, tuple[str, Job]] = {}  # name -> (submission id, what Ray last said of it)
        self._looked: dict[str | None, float] = {}  # sync: study (None: all) -> when last done
        self._checked: dict[str | None, float] = {}  # reconcile: the same
        self._ended: dict[tuple, dict] = {}  # (name, ended_at) -> progress of an ended study

    @property
    def storage(self) -> str:
        return self.settings.storage_path

    def start(self) -> None:
        """Index what is under storage and what ended while the service was down."""
        for step in (self.sync, self.reconcile):
            try:
                step()
            except Exception as exc:  # never refuse to start over storage or Ray
                log.warning("startup %s failed: %s", step.__name__, mask_url(str(exc))[:500])

    # ------------------------------------------------------------------ keeping the index

    @staticmethod
    def _due(last: dict, key: str | None, every: float) -> bool:
        now = time.monotonic()
        if now - last.get(key, float("-inf")) < every:
            return False
        last[key] = now
        return True

    def sync(self, name: str | None = None, *, force: bool = False) -> None:
        """Records under storage -> index (all of them, or the study `name`)."""
        if not (self._due(self._looked, name, SYNC_S) or force):
            return
        with self._syncing:
            names = [name] if name else [n for n in list_names(self.storage) if NAME_PATTERN.fullmatch(n)]
            stamps = file_stamps([join(self.storage, n, STUDY_FILE) for n in names])
            found = {n: stamps[join(self.storage, n, STUDY_FILE)] for n in names
                     if join(self.storage, n, STUDY_FILE) in stamps}
            for study, stamp in found.items():
                # A file changed twice within the filesystem's clock tick keeps its stamp: one
                # written in the last RACY_S seconds is read again.
                if self._records.get(study, ((),))[0] != stamp or time.time() - stamp[0] / 1e9 < RACY_S:
                    self._records[study] = (stamp, self._read(study))  # None: refused (said once per change)
            rows = self.index.by_name() if name is None else {name: self.index.get(name)}
            for study in found:
                if self._records[study][1] is not None:
                    self._apply(study, rows.get(study))

    def _read(self, name: str) -> StudyRecord | None:
        try:
            record = load_record(name, self.storage)
            problems = record_problems(record, name)
        except Exception as exc:  # not JSON, not a record, unreadable
            record, problems = None, [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
        if problems:
            log.warning("study %s: its record is not indexed: %s", name, mask_url("; ".join(problems))[:500])
            return None
        return record

    def reconcile(self, name: str | None = None) -> None:
        """Pending and running Ray-job studies in line with their jobs. Ray unreachable: leave them."""
        if not self._due(self._checked, name, RECONCILE_S):
            return
        for row in self.index.active():
            if not row.submission_id or (name is not None and row.name != name):
                continue
            if row.owner == "job" and not self.jobs.attached():
                continue  # submitted to a cluster this service does not know: its heartbeat tells
            try:
                status, message = self.jobs.status(row.submission_id)
            except JobNotFound:
                status, message = GONE, None
            except RayUnavailable as exc:
                log.warning("reconcile %s: %s", row.name, exc)
                return
            if status == "FAILED":  # Ray's message may carry a long log excerpt: keep its end
                message = (message or "the Ray job failed")[-1500:] + log_tail(self.jobs, row.submission_id)
            self._jobs[row.name] = (row.submission_id, (status, message))
            self._apply(row.name, row)

    def _apply(self, name: str, row: Study | None) -> None:
        """Write into the index what the study's record and Ray job say, where that differs."""
        record = self._records.get(name, ((), None))[1]
        # A stamped record names the Ray job of its current run (None: a run outside Ray), as
        # a resume from a terminal after a job; before that, the job this service submitted.
        stamped = record is not None and record.driver is not None
        submission = record.submission_id if stamped else (row.submission_id if row is not None else None)
        seen = self._jobs.get(name)
        job = seen[1] if seen and seen[0] == submission else None
        if record is None:
            change = job_state(row, job) if row is not None and job is not None else None
            if change is None:
                return
            values: dict[str, Any] = {"state": change[0], "error": change[1]}
        else:
            change = indexed_state(record, row, job)
            state, error = change if change is not None else (row.state, row.error)
            values = {"owner": (row.owner if row is not None else None) or record.owner or "cli",
                      "submission_id": submission, "state": state, "error": error,
                      "created_at": utc(record.created), "started_at": utc(run_started(record))}
            if change is not None and state in FINAL_STATES:
                values["ended_at"] = ended_at(state, record, row)
        if row is None:
            try:
                self.index.add(Study(id=name, name=name, config=record.config, **values))
            except IntegrityError:  # another service process on this index added it a moment ago
                return
        elif any(aware(getattr(row, key)) != value for key, value in values.items()):
            if record is not None and aware(row.created_at) != values["created_at"]:
                values["config"] = record.config  # a new study of that name (--overwrite)
            self.index.update(name, **values)
        else:
            return
        self.version += 1

    # ------------------------------------------------------------------ reading

    def get(self, name: str) -> Study:
        self.sync(name)
        self.reconcile(name)
        study = self.index.get(name)
        if study is None:  # a record written a moment ago is not a 404
            self.sync(name, force=True)
            study = self.index.get(name)
        if study is None:
            raise NoSuchStudy(f"no study {name!r}")
        return study

    def summary(self, study: Study) -> dict[str, Any]:
        """A study as lists show it: its row, the sweep metric, progress and best value so far."""
        key = (study.name, study.ended_at)
        progress = self._ended.get(key) if study.state in FINAL_STATES else None
        if progress is None:
            blank = {"progress": None, "best_value": None}
            try:
                progress = service.study_progress(study.name, self.storage)
            except FileNotFoundError:  # the driver has not written study.json yet
                progress = blank
            except Exception as exc:
                if not store_unavailable(exc):
                    raise
                # One study's store out of reach blanks its numbers, not every list: its own
                # routes (/trials, /best) answer 503 for it.
                log.warning("study %s: its Optuna store is out of reach: %s", study.name, mask_url(str(exc))[:300])
                return {**study.as_dict(), "metric": study.config["sweep"]["metric"], **blank}
            if study.state in FINAL_STATES:
                if len(self._ended) > 1000:
                    self._ended.clear()
                self._ended[key] = progress
        return {**study.as_dict(), "metric": study.config["sweep"]["metric"], **progress}

    def page(self, state: str | None, offset: int, limit: int) -> dict[str, Any]:
        self.sync()
        self.reconcile()
        rows, total = self.index.list(state, offset, limit)
        return {"items": [self.summary(r) for r in rows], "total": total, "offset": offset, "limit": limit}

    def detail(self, name: str) -> dict[str, Any]:
        """One study: its summary, best trial, config, MLflow run and Ray job."""
        study = self.get(name)
        try:
            status = service.study_status(study.name, self.storage)
        except FileNotFoundError:
            status = None
        mlflow = (status or {}).get("mlflow") or {}
        ui = self.settings.mlflow_ui_url
        run = mlflow.get("parent_run_id")
        link = f"{ui.rstrip('/')}/#/experiments/{mlflow.get('experiment_id')}/runs/{run}" if ui and run else None
        sid = study.submission_id
        return {
            **self.summary(study), "best": (status or {}).get("best"), "config": study.config,
            "objectives": (status or {}).get("objectives") or [], "pareto_front": (status or {}).get("pareto_front") or [],
            "mlflow": {"tracking_uri": mlflow.get("tracking_uri"), "experiment_id": mlflow.get("experiment_id"),
                       "run_id": run, "url": link},
            "ray": {"submission_id": sid, "dashboard_url": f"{self.jobs.address}/#/jobs/{sid}" if sid else None},
        }

    def logs(self, name: str, lines: int) -> dict[str, Any]:
        study = self.get(name)
        sid = self._job_of(study, "read its log")
        try:
            text = self.jobs.logs(sid)
        except JobNotFound:
            raise NoJobLog("the Ray job is gone (cluster restarted?)") from None
        return {"submission_id": sid, "lines": text.splitlines()[-lines:]}

    def _job_of(self, study: Study, to: str) -> str:
        """The study's Ray job, where this service can reach it; NoJobLog/StudyConflict why not."""
        error = NoJobLog if to == "read its log" else StudyConflict
        if not study.submission_id:
            raise error(f"study {study.name!r} was started with `prefsweep run` (owner {study.owner}), not as a "
                        f"Ray job: to {to}, use the terminal that runs it")
        if study.owner == "job" and not self.jobs.attached():
            raise error(f"study {study.name!r} runs as Ray job {study.submission_id} on a cluster this service is not "
                        f"attached to (PREFSWEEP_RAY_ADDRESS): `ray job` there can {to}")
        return study.submission_id

    # ------------------------------------------------------------------ acting

    def launch(self, raw: bytes, content_type: str, overrides: list[str], owner: str) -> dict[str, Any]:
        """Validate a submitted config, then run it as a Ray job: one launch at a time, so
        the duplicate and running-studies checks hold."""
        cfg = prepare_config(parse_config_body(raw, content_type), overrides, self.settings)
        settings = self.settings
        with self._launching:
            self.sync(cfg.name, force=True)
            if self.index.get(cfg.name) is not None or study_exists(self.storage, cfg.name):
                raise StudyConflict(f"study {cfg.name!r} exists; choose another name")
            self.reconcile()
            if len(self.index.active()) >= settings.max_running_studies:
                limit = settings.max_running_studies
                raise TooManyStudies(f"at most {limit} studies may be pending or running at once "
                                     f"(PREFSWEEP_MAX_RUNNING_STUDIES={limit}); try again when one ends")
            prepare_stores(cfg)
            path = settings.configs_dir / f"{cfg.name}.yaml"
            write_private(path, dump_yaml(cfg, secrets=True))  # the job's config: its real URLs, 0600
            try:
                self.index.add(Study(id=cfg.name, name=cfg.name, config=cfg.model_dump(mode="json"), owner=owner,
                                     state="pending"))
            except IntegrityError:  # launched through another service process on this index meanwhile
                raise StudyConflict(f"study {cfg.name!r} exists; choose another name") from None
            try:
                submission = self.jobs.submit(cfg.name, path, owner)
            except Exception:
                self.index.delete(cfg.name)
                path.unlink(missing_ok=True)
                raise
            self.index.update(cfg.name, submission_id=submission)
            self.version += 1
        return {"id": cfg.name, "name": cfg.name, "state": "pending", "submission_id": submission}

    def cancel(self, name: str) -> dict[str, Any]:
        """Stop the study's Ray job (its finished trials are kept; `prefsweep resume` continues it)."""
        study = self.get(name)
        if study.state in FINAL_STATES:
            raise StudyConflict(f"study {name!r} already ended: {study.state}")
        sid = self._job_of(study, "stop it")
        try:
            self.jobs.stop(sid)
        except JobNotFound:
            if study.owner == "job":  # not this service's cluster: we cannot say it stopped
                raise StudyConflict(f"Ray job {sid} is not on the cluster at {self.jobs.address}; "
                                    f"`ray job stop {sid}` on its own cluster stops it") from None
        self.index.update(study.id, state="cancelled", error="cancelled through the API")
        self.version += 1
        return self.detail(name)


def prepare_stores(cfg) -> None:
    """Create the MLflow and Optuna databases (and the experiment) here, one launch at a time:
    two sweeps starting at once on a fresh SQLite file would both run its schema migrations."""
    from sweep import tracking
    from sweep.storage.databases import optuna_storage
    from sweep.storage.record import optuna_url

    tracking.ensure_experiment(cfg, tracking.tracking_uri(cfg))
    optuna_storage(optuna_url(cfg))  # creates the tables once; kept for this service's reads
