"""Processes the Ray tiers start, wait on and stop; every tier uses these, so a cluster we
started is always stopped the same way (never a machine-wide `ray stop`)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time


def processes_under(temp: str) -> list:
    """Processes whose command line names `temp` (our Ray nodes and their workers)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(temp in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_processes_under(temp: str) -> None:
    """Stop exactly the processes of the cluster in `temp`; a machine-wide `ray stop` would
    also kill clusters that are not ours."""
    import psutil

    ours = processes_under(temp)
    for proc in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(ours, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 1.0):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`
    seconds, or at once if `proc` (the process we wait on) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
