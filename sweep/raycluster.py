"""Connecting to Ray: an existing cluster when RAY_ADDRESS is set (also inside `ray job
submit`), otherwise a local one started here with its dashboard, which Train-inside-Tune
needs to release stopped trials' workers (ray#54305)."""
from __future__ import annotations

import os

import ray


def init_ray(num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0))
