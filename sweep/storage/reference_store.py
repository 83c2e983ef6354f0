"""The reference cache's on-disk store: per-row reference log-probs under the storage, shared
by every study that has the same inputs (content-addressed), and each study's pass counter.

    STORAGE/refcache/KEY/manifest.json            fingerprint, row counts, sha256 of the tensors
    STORAGE/refcache/KEY/logps-SHA16.safetensors  {"train": [N,2] or [N], "eval": [M,2] or [M]}
    STORAGE/refcache/KEY/used/STUDY.json          which studies used it, and when (`prefsweep cache ls`)
    STORAGE/NAME/refcache/passes/*.json           one record per reference pass a study ran (its counter)

KEY is a hash of everything the numbers depend on (`sweep.storage.fingerprint`). An entry that
fails its checksum, shapes or fingerprint is invalid, never trusted. Writes are atomic: the
tensor file is named after its checksum and the manifest, written last, is the commit. What
fills the store is `sweep.engine.reference_pass`; who decides when is `sweep.study.reference_cache`;
`prefsweep cache ls|rm` lists and removes entries (nothing else deletes them).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any

import torch
from torch import Tensor

from sweep.config.schema import REFCACHE
from sweep.storage.files import delete_dir, delete_file, file_stamps, join, list_names, read_bytes, write_bytes
from sweep.storage.fingerprint import CACHE_FORMAT

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PASSES = "passes"


class CacheInvalid(ValueError):
    """An entry that is missing, partial, corrupt or for other inputs."""


USED = "used"
KEY_PATTERN = re.compile(r"[0-9a-f]{32}")


def cache_root(storage: str) -> str:
    """The shared entries under a storage (also where a study keeps its pass records, under its own dir)."""
    return join(storage, REFCACHE)


def entry_dir(storage: str, key: str) -> str:
    return join(cache_root(storage), key)


def load_entry(entry: str, *, key: str | None = None) -> dict[str, Tensor]:
    """The cached {"train", "eval"} log-probs, verified against the manifest; CacheInvalid otherwise."""
    from safetensors.torch import load as load_tensors

    raw = read_bytes(join(entry, MANIFEST))
    if raw is None:
        raise CacheInvalid(f"{entry}: no manifest (never written, or a write was cut short)")
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise CacheInvalid(f"{entry}: unreadable manifest: {err}") from None
    if manifest.get("format") != CACHE_FORMAT or (key is not None and manifest.get("key") != key):
        raise CacheInvalid(f"{entry}: manifest is for other inputs (key {manifest.get('key')}, expected {key})")
    payload = read_bytes(join(entry, str(manifest.get("file"))))
    if payload is None or hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise CacheInvalid(f"{entry}: tensor file missing or its checksum does not match the manifest")
    try:
        tensors = load_tensors(payload)
    except Exception as err:
        raise CacheInvalid(f"{entry}: unreadable tensor file: {err}") from None
    width = 2 if manifest.get("rows_kind") == "pairs" else 1
    for split in ("train", "eval"):
        t = tensors.get(split)
        rows = manifest.get("rows", {}).get(split)
        if t is None or t.shape[0] != rows or (t.dim() == 2) != (width == 2):
            raise CacheInvalid(f"{entry}: {split} log-probs have shape {None if t is None else tuple(t.shape)}, "
                               f"manifest says {rows} rows of {manifest.get('rows_kind')}")
        if t.numel() and not torch.isfinite(t).all():
            raise CacheInvalid(f"{entry}: {split} log-probs are not all finite")
    return tensors


def is_valid(entry: str, key: str) -> bool:
    try:
        load_entry(entry, key=key)
        return True
    except CacheInvalid as err:
        if read_bytes(join(entry, MANIFEST)) is not None:
            logger.warning("reference cache: %s; recomputing", err)
        return False


def write_entry(entry: str, key: str, parts: dict[str, Any], tensors: dict[str, Tensor], seconds: float) -> dict:
    from safetensors.torch import save as save_tensors

    payload = save_tensors({k: v.contiguous() for k, v in tensors.items()})
    checksum = hashlib.sha256(payload).hexdigest()
    name = f"logps-{checksum[:16]}.safetensors"
    write_bytes(join(entry, name), payload)
    manifest = {
        "format": CACHE_FORMAT, "key": key, "fingerprint": parts, "file": name, "sha256": checksum,
        "rows_kind": parts["rows"], "rows": {k: int(v.shape[0]) for k, v in tensors.items()},
        "created": time.time(), "seconds": round(seconds, 3),
    }
    write_bytes(join(entry, MANIFEST), json.dumps(manifest, indent=2).encode())
    _drop_stale_files(entry, keep={name, MANIFEST})
    return manifest


def _drop_stale_files(entry: str, keep: set[str]) -> None:
    try:
        for name in list_names(entry):
            if name not in keep and name != USED and not name.startswith(".tmp-"):
                delete_file(join(entry, name))
    except OSError:  # best effort: a leftover file is never read (the manifest names the live one)
        pass


def mark_used(entry: str, study: str) -> None:
    """One file per study that used the entry (rewritten on each use): who needs it, and since when unused."""
    write_bytes(join(entry, USED, f"{study}.json"), json.dumps({"study": study, "time": time.time()}).encode())


def record_pass(study_dir: str, key: str, manifest: dict) -> None:
    """One file per reference pass: appends are not portable to object stores, new files are."""
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{key[:12]}-{uuid.uuid4().hex[:8]}.json"
    record = {"key": key, "rows": manifest["rows"], "seconds": manifest["seconds"]}
    write_bytes(join(cache_root(study_dir), PASSES, name), json.dumps(record).encode())


def count_passes(study_dir: str) -> int:
    return sum(1 for name in list_names(join(cache_root(study_dir), PASSES)) if name.endswith(".json"))


def _json(path: str) -> dict | None:
    raw = read_bytes(path)
    try:
        return None if raw is None else json.loads(raw)
    except ValueError:
        return None


def list_entries(storage: str) -> list[dict[str, Any]]:
    """Every entry under the storage, newest use last: key, bytes, created, rows, what it was
    computed from, the studies that used it and when last. Read from manifests, not verified
    (a trial verifies what it reads)."""
    out = []
    for key in list_names(cache_root(storage)):
        if not KEY_PATTERN.fullmatch(key):
            continue
        entry = entry_dir(storage, key)
        manifest = _json(join(entry, MANIFEST)) or {}
        parts = manifest.get("fingerprint", {})
        files = file_stamps([join(entry, name) for name in list_names(entry)])
        uses = [u for u in (_json(join(entry, USED, name)) for name in list_names(join(entry, USED))) if u]
        out.append({
            "key": key, "bytes": sum(size for _, size in files.values()), "complete": bool(manifest),
            "created": manifest.get("created"), "rows": manifest.get("rows"), "reference": parts.get("reference"),
            "tokenizer": parts.get("tokenizer"), "max_length": parts.get("max_length"),
            "used_by": sorted(u.get("study", "?") for u in uses),
            "last_used": max((u.get("time", 0) for u in uses), default=manifest.get("created")),
        })
    return sorted(out, key=lambda e: e["last_used"] or 0)


def remove_entry(storage: str, key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):  # never a path: a key is 32 hex digits
        raise CacheInvalid(f"{key!r} is not a cache key")
    delete_dir(entry_dir(storage, key))
