"""Who drives a study, and is that driver still alive? Told by the study record alone, so any
reader can tell: the REST service on another node, `prefsweep status`, a second `resume`.

The driver calls `keep_alive(record, storage)` once when it starts or resumes a study: the
record is stamped with who started it (`owner`: the REST service's owner name, `job` for a
`ray job submit`, `cli`), the Ray job running the driver now (`submission_id`, so the service
can stop it) and the driver process (`driver`: host, pid, where pids mean the same, when it
started), then saved again every HEARTBEAT_S while the study runs (its `updated` is the
heartbeat).

`alive(record)` is False once the heartbeat is older than STALE_AFTER_S (the driver died with
its node, was killed, or hangs; nodes' clocks agree to well under that), and at once when the
reader shares the driver's pid namespace on the same boot and the process is gone (a killed
`prefsweep run` on this machine). None for a record written before heartbeats: nothing to tell.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from sweep.config.schema import NAME_PATTERN
from sweep.storage.record import StudyRecord

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
# Ray's job supervisor gives a job's entrypoint its JobConfig as JSON in this variable (Ray 2.60,
# dashboard/modules/job/job_supervisor.py): {"metadata": {"job_submission_id": ..., **user metadata}}.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
OWNER_METADATA = "prefsweep.owner"  # the REST service submits with this metadata


def ray_job() -> tuple[str | None, dict]:
    """(submission id, metadata) of the Ray job this process is the entrypoint of, or (None, {})."""
    try:
        metadata = json.loads(os.environ.get(RAY_JOB_CONFIG_ENV) or "{}").get("metadata") or {}
    except (ValueError, AttributeError):
        return None, {}
    submission = metadata.get("job_submission_id")
    return (str(submission) if submission else None), metadata


def machine() -> str:
    """Where a pid means the same process: this boot of this kernel, this pid namespace (two
    containers on one host share neither the namespace nor, often, the hostname)."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return "|".join(parts)


def stamp(record: StudyRecord) -> None:
    """Mark the record as driven by this process from now on."""
    submission, metadata = ray_job()
    if record.owner is None:  # who started it; a resume keeps it
        given = str(metadata.get(OWNER_METADATA, ""))
        record.owner = given if NAME_PATTERN.fullmatch(given) else ("job" if submission else "cli")
    record.submission_id = submission
    record.driver = {"host": socket.gethostname(), "pid": os.getpid(), "machine": machine(), "started": time.time()}
    record.state, record.error = "running", None


def keep_alive(record: StudyRecord, storage: str) -> None:
    """Stamp the record, save it, and save it again every HEARTBEAT_S until its state is no
    longer `running` (the driver's own final save ends the beat)."""
    stamp(record)
    record.save(storage)

    def beat() -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            if record.state != "running":
                return
            try:
                record.save(storage)
            except Exception as exc:  # a storage hiccup: the next beat tries again
                log.warning("study %s: heartbeat not saved: %s", record.name, exc)

    threading.Thread(target=beat, daemon=True, name=f"heartbeat-{record.name}").start()


def alive(record: StudyRecord, now: float | None = None) -> bool | None:
    driver = record.driver
    if not driver:
        return None
    now = time.time() if now is None else now
    if now - record.updated > STALE_AFTER_S:
        return False
    if driver.get("machine") != machine():
        return True  # another node or container: its heartbeat is all we can see
    import psutil

    try:
        process = psutil.Process(int(driver["pid"]))
        # A pid taken again by a process that started after the driver stamped the record is not it.
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= float(driver["started"]) + 1
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def record_state(record: StudyRecord, now: float | None = None) -> tuple[str, str | None]:
    """(state, error) to show: a `running` record whose driver is gone is `interrupted`."""
    if record.state != "running" or alive(record, now) is not False:
        return record.state, record.error
    driver = record.driver or {}
    ago = max(0, int((time.time() if now is None else now) - record.updated))
    return "interrupted", (f"its driver (pid {driver.get('pid')} on {driver.get('host')}) stopped without closing "
                           f"the study (last heartbeat {ago} s ago); `prefsweep resume {record.name}` continues it")
