"""Studies as Ray jobs (`JobSubmissionClient`): submitting, asking, stopping, reading logs.

Ray 2.59+ clusters started by `ray start`/`ray.init` have token auth on: every Jobs API call
carries `Authorization: Bearer <token>`, the token read from PREFSWEEP_RAY_AUTH_TOKEN,
$RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH or Ray's default ~/.ray/auth_token. A
cluster that needs a token we cannot find fails loudly (`RayUnavailable`), never silently.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from sweep.config.redact import private_dir
from sweep.service.settings import Settings
from sweep.study.ray_cluster import free_port
from sweep.study.ray_cluster import ray_auth_token as cluster_token

log = logging.getLogger("prefsweep.api")

# Ray job status -> study state.
JOB_STATES = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "finished",
              "FAILED": "failed", "STOPPED": "cancelled"}


class RayUnavailable(RuntimeError):
    """The Ray Jobs API cannot be reached or refuses us (503 to API clients)."""


class JobNotFound(LookupError):
    pass


def ray_auth_token(settings: Settings) -> str | None:
    return cluster_token(settings.ray_auth_token)


def _reachable(url: str, token: str | None) -> bool:
    request = urllib.request.Request(url + "/api/version")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3):
            return True
    except urllib.error.HTTPError:
        return True  # something answers (e.g. 401): the dashboard is up
    except (urllib.error.URLError, OSError):
        return False


LOCAL_FIX = ("set PREFSWEEP_RAY_ADDRESS to a running Ray dashboard (e.g. http://HEAD:8265), or "
             "PREFSWEEP_LOCAL_RAY_DASHBOARD_PORT to a free port for a local Ray")


def error_line(text: str) -> str:
    """The gist of a failed Ray command's output (a traceback): its last `...Error: message`
    line, first sentence (Ray's own advice names its flags, not our settings)."""
    lines = [ln.strip() for ln in plain_text(text).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", ln)]
    line = (errors or lines or ["no output"])[-1]
    return line.split(". ", 1)[0].rstrip(".")[:300]


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_local_ray(port: int) -> None:
    """`ray start --head` with the dashboard on 127.0.0.1:PORT and token auth on. The cluster
    outlives the service, so a restarted service finds its jobs again. Failures are one line
    with the fix (RayUnavailable: a 503 to API clients)."""
    if _port_taken(port):  # `ray start` would fail there only after starting its GCS, and leave it running
        raise RayUnavailable(f"no Ray dashboard answers on 127.0.0.1:{port}, and another program holds that port, "
                             f"so no local Ray can start there: {LOCAL_FIX}")
    # RAY_API_SERVER_ADDRESS: the head's processes reach its own dashboard even when a later
    # `ray start` elsewhere on the machine becomes "the latest cluster" (see sweep.study.ray_cluster).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if env["RAY_AUTH_MODE"] == "token":
        # `ray start` uses a token but never creates one (ray.init does); make it like ray.init would.
        made = subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, capture_output=True, text=True)
        if made.returncode != 0:
            raise RayUnavailable(f"could not create a Ray auth token: {error_line(made.stderr)}; set RAY_AUTH_TOKEN "
                                 "or PREFSWEEP_RAY_AUTH_TOKEN")
    # Free ports for the GCS and the dashboard agent: other clusters on this machine may hold
    # the defaults (6379, 52365), and a head whose agent cannot bind accepts no jobs.
    args = [ray_bin, "start", "--head", f"--port={free_port()}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
            f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    log.info("starting a local Ray head: %s", " ".join(args[1:]))
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RayUnavailable(f"could not start a local Ray head (dashboard on 127.0.0.1:{port}): "
                             f"{error_line(proc.stderr)}; {LOCAL_FIX}")


class RayJobs:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._client = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return (self.settings.ray_address or f"http://127.0.0.1:{self.settings.local_ray_dashboard_port}").rstrip("/")

    def client(self):
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is not None:
                return self._client
            token = ray_auth_token(self.settings)
            address = self.address
            if not address.startswith(("http://", "https://")):
                address = "http://" + address
            if not self.settings.ray_address and not _reachable(address, token):
                start_local_ray(self.settings.local_ray_dashboard_port)
                token = ray_auth_token(self.settings)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                self._client = JobSubmissionClient(address, headers=headers)
            except Exception as exc:  # ConnectionError, AuthenticationError, ...
                raise RayUnavailable(self._explain(exc, token)) from exc
            return self._client

    def _explain(self, exc: Exception, token: str | None) -> str:
        text = f"Ray Jobs API at {self.address}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "401" in str(exc) or "Authentication" in type(exc).__name__ or "Authentication" in str(exc):
            text += (" - the cluster wants a token: set PREFSWEEP_RAY_AUTH_TOKEN or RAY_AUTH_TOKEN"
                     if not token else " - the token was refused")
        elif self.settings.ray_address:
            text += " - check that the cluster runs and PREFSWEEP_RAY_ADDRESS names its dashboard (e.g. http://HEAD:8265)"
        else:
            text += f" - is that a Ray dashboard? {LOCAL_FIX}"
        return text

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(self.client(), *args, **kwargs)
        except (JobNotFound, RayUnavailable):
            raise
        except RuntimeError as exc:
            if "status code 404" in str(exc) or "does not exist" in str(exc):
                raise JobNotFound(str(exc)) from exc
            raise RayUnavailable(self._explain(exc, None)) from exc
        except Exception as exc:
            with self._lock:
                self._client = None  # reconnect next time
            raise RayUnavailable(self._explain(exc, None)) from exc

    def entrypoint(self, config_path: Path, cwd: Path) -> str:
        command = self.settings.job_command or f"{shlex.quote(sys.executable)} -m sweep"
        return f"cd {shlex.quote(str(cwd))} && {command} run {shlex.quote(str(config_path))}"

    def job_dir(self, study_id: str) -> Path:
        """The job's working directory: new, empty and the service's alone. A hub id that the
        path rule let through (nothing of that name under the workdir or the data roots) then
        has nothing local to resolve to either: `datasets` and `transformers` try a relative
        name as a directory of the working directory before the hub."""
        path = self.settings.data_dir / "jobs" / f"{study_id}-{uuid.uuid4().hex[:8]}"
        private_dir(path.parent)
        path.mkdir(mode=0o700)
        return path

    def submit(self, study_id: str, config_path: Path, owner: str) -> str:
        submission_id = f"prefsweep-{study_id}-{uuid.uuid4().hex[:8]}"
        env = {"PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        if os.environ.get("PATH"):
            env["PATH"] = os.environ["PATH"]
        self._call(lambda c: c.submit_job(
            entrypoint=self.entrypoint(config_path, self.job_dir(study_id)), submission_id=submission_id,
            runtime_env={"env_vars": env},
            metadata={"prefsweep.study": study_id, "prefsweep.owner": owner},
        ))
        return submission_id

    def status(self, submission_id: str) -> tuple[str, str | None]:
        info = self._call(lambda c: c.get_job_info(submission_id))
        return str(getattr(info.status, "value", info.status)), plain_text(info.message or "") or None

    def stop(self, submission_id: str) -> None:
        self._call(lambda c: c.stop_job(submission_id))

    def logs(self, submission_id: str) -> str:
        return plain_text(self._call(lambda c: c.get_job_logs(submission_id)))

    def attached(self) -> bool:
        """Is there a cluster to ask without starting one: a configured address, one this
        service already talks to, or a local Ray that answers? (Studies submitted elsewhere
        with `ray job submit` are no reason to start a local Ray.)"""
        if self.settings.ray_address or self._client is not None:
            return True
        return _reachable(self.address, ray_auth_token(self.settings))


def log_tail(jobs: RayJobs, submission_id: str, lines: int = 15) -> str:
    """The last lines of a job's log, to quote after a failure ("" if Ray cannot say)."""
    try:
        text = jobs.logs(submission_id)
    except (JobNotFound, RayUnavailable):
        return ""
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return ("\n" + "\n".join(tail))[-3000:] if tail else ""


# Terminal control sequences: CSI (colours, cursor moves), OSC (titles, links), and the
# two-byte escapes. Ray prefixes worker lines with coloured "(pid=...)" tags.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def plain_text(text: str) -> str:
    """Log text without terminal escapes, as a page or an error message shows it."""
    return _ANSI.sub("", text)
