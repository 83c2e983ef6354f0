"""The service's studies: its index (sweep.service.index) kept in step with Ray jobs, and
launching and cancelling studies as Ray jobs. What the REST routes read and change; the
routes only translate to HTTP (sweep.service errors -> statuses in api.errors)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sweep.config.loading import dump_yaml
from sweep.config.redact import mask_url, private_dir, write_private
from sweep.service import studies as service
from sweep.service.index import FINAL_STATES, Database, Study
from sweep.service.ray_jobs import JobNotFound, RayJobs, reconcile
from sweep.service.settings import Settings
from sweep.service.submitted import parse_config_body, prepare_config
from sweep.storage.databases import store_unavailable
from sweep.storage.record import exists as study_exists

log = logging.getLogger("prefsweep.api")
RECONCILE_S = 2.0  # unfinished studies are checked with Ray at most this often (per study, and for lists)


class NoSuchStudy(LookupError):
    pass


class StudyConflict(RuntimeError):
    """The request does not fit the study's state (it exists, it ended, ...)."""


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
        self.version = 0  # goes up whenever a launch or cancel changes what lists show
        self._launching = threading.Lock()
        self._checked: dict[str | None, float] = {}  # study id (None: all) -> when last reconciled
        self._ended: dict[str, dict] = {}  # name -> progress of an ended study: it no longer changes

    def start(self) -> None:
        """Studies that ended (or vanished) while the service was down."""
        try:
            reconcile(self.index, self.jobs)
        except Exception as exc:  # never refuse to start over Ray
            log.warning("startup reconcile failed: %s", exc)

    # ------------------------------------------------------------------ reading

    def reconciled(self, study_id: str | None = None) -> None:
        """Unfinished studies in line with their Ray jobs, at most every RECONCILE_S: a Ray
        call per active study on every read would pass the API's read load on to Ray."""
        now = time.monotonic()
        if now - self._checked.get(study_id, float("-inf")) >= RECONCILE_S:
            self._checked[study_id] = now
            reconcile(self.index, self.jobs, study_id)

    def get(self, study_id: str) -> Study:
        self.reconciled(study_id)
        study = self.index.get(study_id)
        if study is None:
            raise NoSuchStudy(f"no study {study_id!r}")
        return study

    @property
    def storage(self) -> str:
        return self.settings.storage_path

    def storage_of(self, study: Study) -> str:
        return study.config.get("storage", {}).get("path", self.storage)

    def summary(self, study: Study) -> dict[str, Any]:
        """A study as lists show it: its row, the sweep metric, progress and best value so far."""
        progress = self._ended.get(study.name) if study.state in FINAL_STATES else None
        if progress is None:
            blank = {"progress": None, "best_value": None}
            try:
                progress = service.study_progress(study.name, self.storage_of(study))
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
                self._ended[study.name] = progress
        return {**study.as_dict(), "metric": study.config["sweep"]["metric"], **progress}

    def page(self, state: str | None, offset: int, limit: int) -> dict[str, Any]:
        self.reconciled()
        rows, total = self.index.list(state, offset, limit)
        return {"items": [self.summary(r) for r in rows], "total": total, "offset": offset, "limit": limit}

    def detail(self, study_id: str) -> dict[str, Any]:
        """One study: its summary, best trial, config, MLflow run and Ray job."""
        study = self.get(study_id)
        try:
            status = service.study_status(study.name, self.storage_of(study))
        except FileNotFoundError:
            status = None
        mlflow = (status or {}).get("mlflow") or {}
        ui = self.settings.mlflow_ui_url
        run = mlflow.get("parent_run_id")
        link = f"{ui.rstrip('/')}/#/experiments/{mlflow.get('experiment_id')}/runs/{run}" if ui and run else None
        sid = study.submission_id
        return {
            **self.summary(study), "best": (status or {}).get("best"), "config": study.config,
            "mlflow": {"tracking_uri": mlflow.get("tracking_uri"), "experiment_id": mlflow.get("experiment_id"),
                       "run_id": run, "url": link},
            "ray": {"submission_id": sid, "dashboard_url": f"{self.jobs.address}/#/jobs/{sid}" if sid else None},
        }

    def logs(self, study_id: str, lines: int) -> dict[str, Any]:
        study = self.get(study_id)
        if not study.submission_id:
            raise NoJobLog("the study has no Ray job")
        try:
            text = self.jobs.logs(study.submission_id)
        except JobNotFound:
            raise NoJobLog("the Ray job is gone (cluster restarted?)") from None
        return {"submission_id": study.submission_id, "lines": text.splitlines()[-lines:]}

    # ------------------------------------------------------------------ acting

    def launch(self, raw: bytes, content_type: str, overrides: list[str], owner: str) -> dict[str, Any]:
        """Validate a submitted config, then run it as a Ray job: one launch at a time, so
        the duplicate and running-studies checks hold."""
        cfg = prepare_config(parse_config_body(raw, content_type), overrides, self.settings)
        settings = self.settings
        with self._launching:
            if self.index.get(cfg.name) is not None or study_exists(self.storage, cfg.name):
                raise StudyConflict(f"study {cfg.name!r} exists; choose another name")
            reconcile(self.index, self.jobs)
            if len(self.index.active()) >= settings.max_running_studies:
                limit = settings.max_running_studies
                raise TooManyStudies(f"at most {limit} studies may be pending or running at once "
                                     f"(PREFSWEEP_MAX_RUNNING_STUDIES={limit}); try again when one ends")
            prepare_stores(cfg)
            path = settings.configs_dir / f"{cfg.name}.yaml"
            write_private(path, dump_yaml(cfg, secrets=True))  # the job's config: its real URLs, 0600
            self.index.add(Study(id=cfg.name, name=cfg.name, config=cfg.model_dump(mode="json"), owner=owner,
                                 state="pending"))
            try:
                submission = self.jobs.submit(cfg.name, path, owner)
            except Exception:
                self.index.delete(cfg.name)
                path.unlink(missing_ok=True)
                raise
            self.index.update(cfg.name, submission_id=submission)
            self.version += 1
        return {"id": cfg.name, "name": cfg.name, "state": "pending", "submission_id": submission}

    def cancel(self, study_id: str) -> dict[str, Any]:
        study = self.get(study_id)
        if study.state in FINAL_STATES:
            raise StudyConflict(f"study {study_id!r} already ended: {study.state}")
        if study.submission_id:
            try:
                self.jobs.stop(study.submission_id)
            except JobNotFound:
                pass
        self.index.update(study.id, state="cancelled", error="cancelled through the API")
        service.mark_stopped(study.name, self.storage_of(study), "cancelled through the API")
        self.version += 1
        return self.detail(study_id)


def prepare_stores(cfg) -> None:
    """Create the MLflow and Optuna databases (and the experiment) here, one launch at a time:
    two sweeps starting at once on a fresh SQLite file would both run its schema migrations."""
    from sweep import tracking
    from sweep.storage.databases import optuna_storage
    from sweep.storage.record import optuna_url

    tracking.ensure_experiment(cfg, tracking.tracking_uri(cfg))
    optuna_storage(optuna_url(cfg))  # creates the tables once; kept for this service's reads
