"""When and where the study's shared reference passes run (the coordination layer of the
reference cache; the store is `sweep.storage.reference_store`, the pass itself
`sweep.engine.reference_pass`).

A frozen reference model gives every row the same log-prob in every trial, so a sweep of N
trials need not run it N times (nor hold a second model per worker). Before Tune starts the
driver computes the study's one entry when every trial shares it; when swept parameters change
the entry (model, data lengths, objective), each trial asks for its own, and the study's
coordinator actor makes concurrent trials that need the same missing entry run one pass
between them. Passes run as Ray tasks with one trial worker's resources, outside the trial's
placement group. Whether a trial uses the cache at all is the objective's to say
(`Objective.reference_cache` in the registry), plus `train.reference_cache`.
"""
from __future__ import annotations

import threading
from typing import Any

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.engine.reference_pass import compute_and_store
from sweep.storage.fingerprint import fingerprint
from sweep.storage.reference_store import count_passes, entry_dir, is_valid


def cache_decision(cfg: PrefsweepConfig) -> tuple[bool, str]:
    """(use the cache?, why) for one trial's config."""
    if not cfg.train.reference_cache:
        return False, "off: train.reference_cache is false"
    use, why = cfg.objective.resolved().reference_cache(cfg.objective)
    return use, ("on" if use else f"off: {why}")


# Outside any placement group. Tune runs each trial function in a placement group that
# captures its children, and that group holds only the trial function's memory sliver (see
# sweep.study.driver): a pass or coordinator launched from a trial would be refused ("cannot fit
# into any bundles") or die with the trial. "DEFAULT" opts out of the capture.
_UNCAPTURED = {"scheduling_strategy": "DEFAULT"}


def task_options(cfg: PrefsweepConfig) -> dict[str, Any]:
    """One trial worker's resources: the pass runs where a trial could, on the cluster's free
    resources (the trial function itself holds none: its workers have not started yet)."""
    return {"num_cpus": cfg.resources.cpus_per_worker, "num_gpus": 1 if cfg.resources.use_gpu else 0,
            **_UNCAPTURED}


class _Coordinator:
    """Serialises passes per entry within a study, so concurrent trials that need the same
    missing entry run one pass between them, not one each. A threaded Ray actor (no CPUs)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def ensure(self, study_dir: str, key: str, parts: dict, config: dict, data_box: list, options: dict) -> bool:
        import ray

        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if is_valid(entry_dir(study_dir, key), key):
                return False
            task = ray.remote(compute_and_store).options(**options)
            ray.get(task.remote(study_dir, key, parts, config, data_box[0]))  # data_box: the ref stays a ref
            return True


_HELD: dict[str, Any] = {}  # the driver's handles: a named actor lives while a handle does


def coordinator(study_name: str):
    """The study's coordinator actor: the driver creates it before Tune starts and holds it
    until the sweep ends; trials find it by name (one that finds none creates it, outside
    its own placement group, so it outlives that trial)."""
    import ray

    actor = ray.remote(num_cpus=0, max_concurrency=64)(_Coordinator)
    return actor.options(name=f"prefsweep-refcache-{study_name}", get_if_exists=True, **_UNCAPTURED).remote()


def ensure_entry(cfg: PrefsweepConfig, data, study_dir: str, *, data_ref=None,
                 data_hash: str | None = None) -> tuple[str | None, str, bool]:
    """-> (entry dir or None, decision note, whether this call ran a reference pass).
    Inside Ray the pass runs as a task with trial resources, via the study's coordinator;
    outside Ray (tests, tools) it runs in this process."""
    use, note = cache_decision(cfg)
    if not use:
        return None, note, False
    key, parts = fingerprint(cfg, data, data_hash=data_hash)
    entry = entry_dir(study_dir, key)
    if is_valid(entry, key):
        return entry, f"on: {key}", False
    import ray

    if not ray.is_initialized():
        compute_and_store(study_dir, key, parts, cfg.model_dump(mode="json"), data)
        return entry, f"on: {key}", True
    ref = data_ref if data_ref is not None else ray.put(data)
    computed = ray.get(coordinator(cfg.name).ensure.remote(
        study_dir, key, parts, cfg.model_dump(mode="json"), [ref], task_options(cfg)))
    return entry, f"on: {key}", computed


# Swept keys under these prefixes can change an entry's key (or whether one is used), so the
# driver cannot know the trials' entries up front; trials then compute theirs on first use.
_FINGERPRINT_KEYS = ("model.", "data.", "objective.name", "objective.kl_estimator", "objective.sync_ref_model",
                     "objective.ema_tau", "objective.ld_alpha", "resources.use_gpu", "train.reference_cache")


def prepare_study(cfg: PrefsweepConfig, data, study_dir: str, tracking_uri: str, parent_run_id: str) -> str | None:
    """Before Tune starts: create the study's coordinator and, when every trial shares the
    study config's entry, compute it now (a failing reference model then fails the study
    before any trial). -> the entry dir, or None when trials decide for themselves."""
    _HELD[cfg.name] = coordinator(cfg.name)
    if any(swept.key.startswith(_FINGERPRINT_KEYS) for swept in walk(cfg.sweep.parameters)):
        return None
    entry, note, _ = ensure_entry(cfg, data, study_dir)
    tracking.set_tags(tracking_uri, parent_run_id, {tracking.CACHE_TAG: note, tracking.PASSES_TAG: count_passes(study_dir)})
    return entry


def for_trial(cfg: PrefsweepConfig, data, study_dir: str, *, data_ref, tracking_uri: str, run_id: str,
              parent_run_id: str) -> str | None:
    """In a trial: the entry for this trial's settings (computed if missing), tagged on its
    MLflow run; a pass run here updates the study's pass count."""
    entry, note, computed = ensure_entry(cfg, data, study_dir, data_ref=data_ref)
    tracking.set_tags(tracking_uri, run_id, {tracking.CACHE_TAG: note})
    if computed:
        tracking.set_tags(tracking_uri, parent_run_id, {tracking.PASSES_TAG: count_passes(study_dir)})
    return entry
