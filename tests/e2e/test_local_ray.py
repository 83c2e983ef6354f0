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
