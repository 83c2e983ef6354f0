"""A throwaway Postgres for the tiers that need one (cluster: Optuna, MLflow and the REST
service's table; e2e attacks: the connection-exhaustion case): `initdb` + `pg_ctl` on a free
port, as the `postgres` user when we are root, password auth over TCP, databases `optuna`,
`mlflow` and `prefsweep_api`. Without Postgres binaries (dev machines) the tests skip; CI
installs them (scripts/system-packages.sh). Each tier's conftest makes the generator below
a fixture of its own scope."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweep.study.ray_cluster import free_port

DATABASES = ("optuna", "mlflow", "prefsweep_api")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL with the driver named (psycopg 3, a prefsweep dependency): plain
        postgresql:// means psycopg2 on SQLAlchemy 2.0 but psycopg on 2.1."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True)


def postgres_server():
    """Generator for a fixture: start Postgres, yield a Postgres, stop it even on failure."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("Postgres binaries not found (Debian: apt-get install postgresql; .ci/run installs them "
                    "through scripts/system-packages.sh)")
    pytest.importorskip("psycopg", reason="psycopg (a prefsweep dependency) drives Postgres URLs")

    as_root = os.geteuid() == 0
    if as_root:  # postgres refuses to run as root: run it as the `postgres` system user
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run Postgres as")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="psp-", dir="/tmp")
    password = secrets.token_hex(16)
    pwfile = Path(base, "pw")
    pwfile.write_text(password + "\n")
    if as_root:
        for path in (base, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    else:
        prefix = []
    data, log, port = Path(base, "data"), Path(base, "log"), free_port()

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=base)

    made = pg(str(bindir / "initdb"), "-D", str(data), "-U", "prefsweep", f"--pwfile={pwfile}",
              "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-sync")
    assert made.returncode == 0, made.stdout + made.stderr
    started = pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "90", "-o",
                 f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        log_tail = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
        assert started.returncode == 0, started.stdout + started.stderr + log_tail
        server = Postgres("127.0.0.1", port, "prefsweep", password)
        with server.connect() as conn:
            for database in DATABASES:
                conn.execute(f"CREATE DATABASE {database}")
        yield server
    finally:
        stopped = pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        pidfile = data / "postmaster.pid"
        if stopped.returncode != 0 and pidfile.is_file():  # last resort: the postmaster by its pid
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
