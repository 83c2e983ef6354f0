"""Where a study lives and what it records about itself.

Layout under `storage.path`:  NAME/             Tune experiment (trial state, results)
                               NAME/train/       one Ray Train run per trial (checkpoints)
                               NAME/study.json   config, MLflow ids, state (read by status/best/API);
                                                 0600 in a 0700 NAME/: it holds the real database URLs
                               optuna.db, mlflow.db, mlartifacts/   SQLite defaults, shared by studies
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep.config.schema import OPTUNA_DB, PrefsweepConfig, resolve_storage_path
from sweep.storage.files import join, read_text, write_text

STUDY_FILE = "study.json"


class StudyNotFound(FileNotFoundError):
    """No study record of that name under that storage."""


def optuna_url(cfg: PrefsweepConfig) -> str:
    if cfg.storage.optuna_url:
        return cfg.storage.optuna_url
    storage = cfg.resolved_storage()
    if "://" in storage:
        raise ValueError("storage.optuna_url: storage.path is a URI, so give a database URL for Optuna")
    return f"sqlite:///{storage}/{OPTUNA_DB}"


@dataclass
class StudyRecord:
    name: str
    config: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    optuna_url: str
    state: str = "running"  # running | finished | failed | interrupted
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    best: dict[str, Any] | None = None
    error: str | None = None
    # Who runs it (sweep.study.liveness stamps these; the REST service lists them):
    owner: str | None = None  # who started it: `cli`, `job` (ray job submit) or the REST service's owner (`api`)
    submission_id: str | None = None  # the Ray job its driver runs in now, if any (cancel stops it)
    driver: dict[str, Any] | None = None  # the driver process now: host, pid, machine, started

    @property
    def cfg(self) -> PrefsweepConfig:
        return PrefsweepConfig.model_validate(self.config)

    def save(self, storage: str) -> None:
        with _SAVING:  # the driver's heartbeat thread saves too: the last write has the last state
            self.updated = time.time()
            write_text(join(storage, self.name, STUDY_FILE), json.dumps(asdict(self), indent=2, default=str))


_SAVING = threading.Lock()


def study_dir(storage: str, name: str) -> str:
    return join(storage, name)


def load_record(name: str, storage: str = "runs") -> StudyRecord:
    storage = resolve_storage_path(storage)
    text = read_text(join(storage, name, STUDY_FILE))
    if text is None:
        raise StudyNotFound(f"no study {name!r} under {storage} (looked for {join(storage, name, STUDY_FILE)}); "
                            "--storage names the storage.path it ran with")
    record = StudyRecord(**json.loads(text))
    if isinstance(record.config.get("storage"), dict):
        record.config["storage"]["path"] = storage  # the study lives where its record is (a relative path was the driver's)
    return record


def exists(storage: str, name: str) -> bool:
    return read_text(join(storage, name, STUDY_FILE)) is not None
