"""The real-Ray tier: one local Ray head (with dashboard) per test session, started with
`ray start --head` in a temp dir outside the repo and stopped at the end, even on failure.
Tests drive the `prefsweep` CLI in subprocesses, as users and `ray job submit` do."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import BIN, REPO
from postgres import postgres_server
from processes import stop_processes_under

from sweep.study.ray_cluster import free_port


@pytest.fixture(scope="session")
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="psr-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    port, dash, agent = free_port(), free_port(), free_port()
    # Token auth, explicitly on, with the session's own token, for the cluster and (through this
    # process's environment) every client the tests start. Left to Ray, the mode follows whether
    # ~/.ray/auth_token exists when each process starts, and a local `ray.init` mid-session (the
    # local-Ray test) creates that file: later clients then sent a token to a cluster that
    # started without one and every trial died unstarted (CI, 2026-12-06).
    token_file = Path(temp, "auth_token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    patch = pytest.MonkeyPatch()
    for key, value in auth.items():
        patch.setenv(key, value)
    patch.delenv("RAY_AUTH_TOKEN", raising=False)
    # The cluster's own processes inherit RAY_ADDRESS: Ray helpers that look for "the" local
    # cluster (Train's placement-group cleaner) would otherwise pick whichever cluster on this
    # machine started last.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": f"127.0.0.1:{port}"}
    try:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
             "--include-dashboard=true", f"--dashboard-port={dash}",
             # Free ports, not Ray's defaults: another cluster on the machine may hold them, and
             # jobs are then refused ("No available agent to submit job").
             f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={free_port()}",
             "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
            check=True, env=env, capture_output=True, text=True,
        )
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "temp": temp}
    finally:
        stop_processes_under(temp)
        patch.undo()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def cli(ray_cluster, tmp_path):
    """Run `prefsweep ...` against the session cluster; returns CompletedProcess."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["address"], "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}

    def run(*args: str, check: bool = True, timeout: int = 900, **kwargs):
        proc = subprocess.run([str(BIN / "prefsweep"), *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"prefsweep {' '.join(args)} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    run.env = env
    return run


# A throwaway Postgres (tests/postgres.py) for the attack tier's connection-exhaustion case;
# started only by the tests that ask for it.
postgres = pytest.fixture(scope="session")(postgres_server)
