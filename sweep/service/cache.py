"""The shared reference cache under a storage, for `prefsweep cache ls|rm`: its entries and
their removal (the cache's garbage collection: nothing else deletes entries)."""
from __future__ import annotations

import time
from typing import Any

from sweep.config.schema import resolve_storage_path
from sweep.storage.reference_store import list_entries, remove_entry

_MIN_PREFIX = 6


class UnknownCacheEntry(LookupError):
    """A key (or prefix) that names no entry, or more than one."""


def cache_entries(storage: str) -> list[dict[str, Any]]:
    """Every entry, least recently used first."""
    return list_entries(resolve_storage_path(storage))


def _chosen(entries: list[dict], keys: list[str]) -> list[dict]:
    chosen = []
    for key in keys:
        found = [e for e in entries if e["key"].startswith(key.lower())] if len(key) >= _MIN_PREFIX else []
        if len(found) != 1:
            why = "no entry" if not found else f"{len(found)} entries"
            raise UnknownCacheEntry(f"{key!r} names {why} (give a key, or at least its first {_MIN_PREFIX} "
                                    "characters, as `prefsweep cache ls` shows them)")
        chosen += found
    return chosen


def remove_entries(storage: str, keys: list[str], *, everything: bool = False,
                   unused_days: float | None = None) -> list[str]:
    """Removes the named entries (every one with `everything`, or those no study used for
    `unused_days`) -> the keys removed. A study still running that needs a removed entry
    computes it again."""
    root = resolve_storage_path(storage)
    entries = list_entries(root)
    if everything:
        chosen = entries
    elif unused_days is not None:
        cutoff = time.time() - unused_days * 86400
        chosen = [e for e in entries if (e["last_used"] or 0) < cutoff]
    else:
        chosen = _chosen(entries, keys)
    for entry in chosen:
        remove_entry(root, entry["key"])
    return [e["key"] for e in chosen]
