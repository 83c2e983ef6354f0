"""How the service decides a study's state from what it knows: the study's record (written by
its driver), what Ray last said of the run's job, and the index row (which holds what the
service itself did, such as a cancel). Pure functions: tests/test_registry.py states the rule."""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from sweep.config.schema import NAME_PATTERN
from sweep.service.index import FINAL_STATES, Study, aware
from sweep.service.ray_jobs import JOB_STATES
from sweep.storage.record import StudyRecord
from sweep.study.liveness import record_state

RECORD_STATES = ("running", "finished", "failed", "interrupted")
SUBMISSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
GONE = "GONE"  # the Ray job's cluster does not know it (restarted, or another cluster)
Job = tuple[str, str | None]  # (Ray job status, message) of a study's current run


def record_problems(record: StudyRecord, name: str) -> list[str]:
    """Why a record under storage may not be indexed (it is a file anyone with the storage can
    write): the same rules as every other input of the service."""
    problems = []
    if record.name != name:
        problems.append(f"name {record.name!r} is not its directory's")
    if record.state not in RECORD_STATES:
        problems.append(f"state must be one of {', '.join(RECORD_STATES)}")
    if record.owner is not None and not (isinstance(record.owner, str) and NAME_PATTERN.fullmatch(record.owner)):
        problems.append(f"owner must match {NAME_PATTERN.pattern}")
    if record.submission_id is not None and not (isinstance(record.submission_id, str)
                                                 and SUBMISSION_ID.fullmatch(record.submission_id)):
        problems.append(f"submission_id must match {SUBMISSION_ID.pattern}")
    if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in (record.created, record.updated)):
        problems.append("created and updated must be finite times")
    if not isinstance(record.error, (str, type(None))) or not isinstance(record.driver, (dict, type(None))):
        problems.append("error must be text and driver a mapping")
    try:
        record.cfg  # noqa: B018 - validates the config
    except Exception as exc:
        problems.append(f"config: {str(exc).splitlines()[0]}")
    return problems


def run_started(record: StudyRecord) -> float:
    """When the driver of the record's current run started (a resume is a new run)."""
    return float((record.driver or {}).get("started") or record.created)


def indexed_state(record: StudyRecord, row: Study | None, job: Job | None,
                  now: float | None = None) -> tuple[str, str | None] | None:
    """(state, error) the index should hold for a study with this record, or None to keep its
    row as it is. `job`: what Ray last said of the run's Ray job (None: not a job, or not asked)."""
    if row is not None and row.state in FINAL_STATES and row.ended_at is not None:
        ended = aware(row.ended_at).timestamp()
        if ended >= record.updated:
            return None  # nothing new from the driver since the row ended
        if row.state == "cancelled" and ended >= run_started(record):
            return None  # what the cancelled run wrote as it stopped
    if record.state != "running":
        return record.state, record.error
    if job is not None and job[0] != GONE:
        state = JOB_STATES.get(job[0], "running")
        return state, (job[1] if state in ("failed", "cancelled") else None)
    return record_state(record, now)  # its heartbeat (a job unknown to this service's Ray included)


def job_state(row: Study, job: Job) -> tuple[str, str | None] | None:
    """(state, error) of a study launched here whose driver has written no record (yet)."""
    status, message = job
    if status == GONE:
        return "interrupted", "the Ray job is gone (cluster restarted?); `prefsweep resume` continues the study"
    state = JOB_STATES.get(status, row.state)
    return None if state == row.state else (state, message if state in ("failed", "cancelled") else None)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def ended_at(state: str, record: StudyRecord, row: Study | None) -> datetime:
    """When a study ended: its record's last save when the record says so, else when the
    service first saw it end (its driver or Ray job gone)."""
    if state == record.state:
        return utc(record.updated)
    if row is not None and row.state in FINAL_STATES and row.ended_at is not None:
        return aware(row.ended_at)
    return datetime.now(timezone.utc)
