"""`prefsweep run` without RAY_ADDRESS starts its own local Ray. Its processes must reach that
cluster's state API even when /tmp/ray/ray_current_cluster (written by every `ray start`)
names another, dead cluster: Train's placement-group cleaner asks the state API whether its
controller lives, and when it cannot, ASHA-stopped trials keep their CPUs and the sweep's
next trial waits forever (seen with the README's demo command after a killed `ray start`)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.ray

PROBE = """
import ray
from sweep.study.ray_cluster import init_ray

init_ray(num_cpus=1)

@ray.remote(num_cpus=0)
def nodes_seen_from_inside():
    from ray.util.state import list_nodes  # address=None, as the cleaner calls it
    return len(list_nodes())

print("nodes", ray.get(nodes_seen_from_inside.remote(), timeout=120))
"""


def test_cluster_processes_reach_their_own_cluster_despite_a_stale_address_file():
    with tempfile.TemporaryDirectory(prefix="psl-", dir="/tmp") as temp:  # short: Ray's socket paths
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")  # nothing listens there
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        env.update(RAY_TMPDIR=temp, RAY_USAGE_STATS_ENABLED="0")
        proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0 and "nodes 1" in proc.stdout, proc.stderr[-4000:]



CONNECT = """
import ray
from sweep.study.ray_cluster import init_ray

init_ray()

@ray.remote(num_cpus=1)
class Answer:
    def get(self):
        return 42

print("answer", ray.get(Answer.remote().get.remote(), timeout=120))
"""


@pytest.mark.parametrize("mode", ["unset", "token"])
def test_a_token_lying_around_goes_only_to_a_cluster_that_wants_one(mode):
    """RAY_ADDRESS, no RAY_AUTH_MODE, and a ~/.ray/auth_token that appeared after the cluster
    started (any local `ray.init` creates one). A cluster running without auth must get no
    token: sent one, its actors died unstarted (CI, 2026-12-06). A token cluster gets it after
    refusing the first try."""
    from processes import stop_processes_under

    from sweep.study.ray_cluster import free_port

    with tempfile.TemporaryDirectory(prefix="pst-", dir="/tmp") as temp:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API"))}
        base.update(RAY_USAGE_STATS_ENABLED="0", HOME=temp)  # ~/.ray/auth_token is temp's
        token = Path(temp, ".ray", "auth_token")
        token.parent.mkdir()
        if mode == "token":
            token.write_text("0123456789abcdef0123456789abcdef")
        port = free_port()
        try:
            subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
                            "--num-cpus=1", f"--temp-dir={temp}", "--include-dashboard=false",
                            f"--ray-client-server-port={free_port()}", "--disable-usage-stats"],
                           env={**base, **({"RAY_AUTH_MODE": "token"} if mode == "token" else {})},
                           check=True, capture_output=True, text=True)
            token.write_text("0123456789abcdef0123456789abcdef")
            proc = subprocess.run([sys.executable, "-c", CONNECT], cwd=REPO, env={**base, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                                  capture_output=True, text=True, timeout=300)
        finally:
            stop_processes_under(temp)
    assert proc.returncode == 0 and "answer 42" in proc.stdout, proc.stderr[-4000:]
    assert ("wants a token" in proc.stderr) == (mode == "token")
