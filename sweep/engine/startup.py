"""Where a trial's seconds go before and after its training work: wall-clock marks from the
worker process's start (Ray Train's worker group) through its imports, fetching its rows,
loading its model, to its first step and the end of its loop. Rank 0 keeps them on the trial's
MLflow run (`prefsweep.startup`, JSON), beside the trial function's own start and end
(`prefsweep.trial_times`), so a sweep's per-trial overhead can be measured and explained
(`benchmarks/bench_ray.py`)."""
from __future__ import annotations

import json
import time

_MARKS: dict[str, float] = {}
_IMPORTED: list[float] = []


def imported() -> None:
    """The worker loop's module finished importing (its imports are most of a fresh worker's start)."""
    _IMPORTED.append(time.time())


def begin() -> None:
    """The worker loop starts: Ray Train's worker is set up and has called it."""
    import psutil

    _MARKS.clear()
    _MARKS["process"] = psutil.Process().create_time()
    if _IMPORTED:
        _MARKS["imported"] = max(_MARKS["process"], _IMPORTED[0])  # a reused process imported it earlier
    _MARKS["loop"] = time.time()


def mark(name: str) -> None:
    """The first time `name` happens in this run (later calls keep the first)."""
    _MARKS.setdefault(name, time.time())


def as_tag() -> str:
    return json.dumps({name: round(t, 3) for name, t in _MARKS.items()})
