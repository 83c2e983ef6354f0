"""The REST service as a subprocess (`prefsweep serve`) against the session Ray cluster, for
the API, browser and schemathesis tests. The service's data dir lives once per test session,
so the demo study one module finishes is the one the next module reads."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from sweep.study.ray_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "e2e-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEMO = "demo-api"
_SHARED: dict[str, Path] = {}


def shared_base(tmp_path_factory) -> Path:
    if "base" not in _SHARED:
        _SHARED["base"] = tmp_path_factory.mktemp("api-e2e")
    return _SHARED["base"]


class Service:
    """`prefsweep serve` on a free port; `restart()` keeps the data dir (and database)."""

    def __init__(self, base: Path, ray_dashboard: str, **settings: str):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "PREFSWEEP_API_TOKEN": TOKEN, "PREFSWEEP_DATA_DIR": str(base / "svc"),
            "PREFSWEEP_STORAGE_PATH": str(base / "runs"), "PREFSWEEP_RAY_ADDRESS": ray_dashboard,
            # The demo reads builtin:demo/*; the data root is the test's own (empty) folder.
            "PREFSWEEP_WORKDIR": str(base), "PREFSWEEP_DATA_ROOTS": str(base / "data"),
            "PREFSWEEP_MAX_RUNNING_STUDIES": "2", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            **{f"PREFSWEEP_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen | None = None
        # Every route but /healthz needs the token: `client` sends it, `anon` does not.
        self.client = httpx.Client(base_url=self.url, timeout=120, headers=AUTH)
        self.anon = httpx.Client(base_url=self.url, timeout=120)

    def start(self) -> Service:
        log = open(self.base / f"serve-{self.port}.log", "ab")
        self.proc = subprocess.Popen([str(BIN / "prefsweep"), "serve", "--port", str(self.port)],
                                     cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prefsweep serve exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.client.get("/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"prefsweep serve did not answer in 90 s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self) -> Service:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 6000) -> str:
        return b"".join(p.read_bytes() for p in sorted(self.base.glob("serve-*.log")))[-chars:].decode(errors="replace")

    # -------------------------------------------------------------- helpers for tests

    def launch(self, name: str, overrides: dict | None = None) -> httpx.Response:
        sets = [f"{k}={v}" for k, v in (overrides or {}).items()]
        return self.client.post("/studies", json=small_config(name), params={"set": sets}, headers=AUTH)

    def wait(self, name: str, until, timeout: float = 400, every: float = 2.0) -> dict:
        deadline = time.time() + timeout
        study = None
        while time.time() < deadline:
            study = self.client.get(f"/studies/{name}").json()
            if until(study):
                return study
            time.sleep(every)
        raise AssertionError(f"study {name} did not get there in {timeout} s; last: {study}\n{self.log_tail()}")

    def ensure_demo(self) -> dict:
        """The finished demo study, launching it if this session has not yet."""
        if self.client.get(f"/studies/{DEMO}").status_code == 404:
            response = self.launch(DEMO)
            assert response.status_code == 201, response.text
        return self.wait(DEMO, lambda s: s["state"] not in ("pending", "running"))


def small_config(name: str) -> dict:
    """configs/demo.yaml, cut down: 2 trials of 40 steps, evaluated twice (16 prompts completed
    each time), no early stopping."""
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["train"].update(max_steps=40, eval_every=20, logging_steps=10)
    cfg["sweep"].update(num_trials=2, early_terminate=None)
    cfg["evaluation"].update(prompts=16, max_new_tokens=24)
    return cfg
