"""The study's coordinator: one named Ray actor per study through which the work every trial
shares happens once, however many trials ask at the same time:

- the tokenization of each distinct setting (tokenizer, lengths, pairs or rows): the driver
  registers the one it made before Tune started; a setting that swept parameters make is
  tokenized on first use by a Ray task, and its object stays in Ray's object store, owned by
  this actor, for every later trial (`sweep.study.shared_tokens`);
- each missing reference-cache entry: one pass per entry (`sweep.study.reference_cache`).

The driver creates it on its own node before Tune starts and holds it until the sweep ends,
so losing a worker node costs only the trials that ran there (Tune retries them) and never
the study's shared state; trials find it by name (one that finds none creates it, outside
its own placement group, so it outlives that trial). Tasks run with one trial worker's
resources, outside the trial's placement group.
"""
from __future__ import annotations

import threading
from typing import Any

from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import TokenizedData, tokenize_rows
from sweep.engine.reference_pass import compute_and_store
from sweep.storage.reference_store import entry_dir, is_valid

# Outside any placement group. Tune runs each trial function in a placement group that
# captures its children, and that group holds only the trial function's memory sliver (see
# sweep.study.driver): a task or actor launched from a trial would be refused ("cannot fit
# into any bundles") or die with the trial. "DEFAULT" opts out of the capture.
_UNCAPTURED = {"scheduling_strategy": "DEFAULT"}


def on_driver_node() -> dict[str, Any]:
    """Scheduling options that put an actor on this process's node, hard: a study-wide actor
    placed by default scheduling (it needs no CPU, so it fits anywhere) could land on a
    worker node and die with it, failing every trial that asks it afterwards."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


def task_options(cfg: PrefsweepConfig) -> dict[str, Any]:
    """One trial worker's resources: a task runs where a trial could, on the cluster's free
    resources (the trial function itself holds none: its workers have not started yet)."""
    return {"num_cpus": cfg.resources.cpus_per_worker, "num_gpus": cfg.resources.gpus(), **_UNCAPTURED}


def tokenize_task(config: dict, data, data_hash: str) -> TokenizedData:
    return tokenize_rows(PrefsweepConfig.model_validate(config), data, data_hash=data_hash)


class _Coordinator:
    """A threaded Ray actor (no CPUs): a lock per key, so concurrent trials needing the same
    missing thing wait for one computation instead of each running their own."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._tokens: dict[str, list] = {}
        self._tokenizations = 0

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def add_tokens(self, key: str, box: list) -> int:
        """The driver's own tokenization (its object, in a list so it stays a reference) -> tokenizations so far."""
        with self._lock(f"tokens/{key}"):
            if key not in self._tokens:
                self._tokens[key] = box
                self._tokenizations += 1
            return self._tokenizations

    def tokens(self, key: str, config: dict, data_box: list, data_hash: str, options: dict) -> tuple[list, int | None]:
        """-> ([the tokenization's object ref], tokenizations so far if this call made one, else None)."""
        import ray

        with self._lock(f"tokens/{key}"):
            if key in self._tokens:
                return self._tokens[key], None
            ref = ray.remote(tokenize_task).options(**options).remote(config, data_box[0], data_hash)
            ray.wait([ref], fetch_local=False)
            ray.get(ref)  # its error, if it failed, to the trial that asked (and nothing kept)
            self._tokens[key] = [ref]
            self._tokenizations += 1
            return self._tokens[key], self._tokenizations

    def reference(self, storage: str, study_dir: str, key: str, parts: dict, config: dict, tokens_box: list,
                  options: dict) -> bool:
        """Computes the entry unless it is there and valid -> whether a pass ran."""
        import ray

        with self._lock(f"reference/{key}"):
            if is_valid(entry_dir(storage, key), key):
                return False
            task = ray.remote(compute_and_store).options(**options)
            ray.get(task.remote(storage, study_dir, key, parts, config, tokens_box[0]))  # the box keeps it a ref
            return True


_HELD: dict[str, Any] = {}  # the driver's handles: a named actor lives while a handle does


def coordinator(study_name: str, placement: dict[str, Any] | None = None):
    """The study's coordinator, found by name, or made with `placement` (default: anywhere
    outside the caller's placement group) when there is none."""
    import ray

    actor = ray.remote(num_cpus=0, max_concurrency=64)(_Coordinator)
    return actor.options(name=f"prefsweep-study-{study_name}", get_if_exists=True,
                         **(placement or _UNCAPTURED)).remote()


def hold(study_name: str):
    """The driver's handle, kept until the process ends (the actor, its tokenizations with it),
    on the driver's node."""
    _HELD[study_name] = coordinator(study_name, on_driver_node())
    return _HELD[study_name]
