"""What a shared reference pass depends on, hashed into its cache key (see sweep/storage/reference_store.py).

Everything the numbers depend on goes in, nothing else: the reference model and tokenizer by
content (not path or mtime, since each node may hold its own copy), the loaded rows, the
truncation settings, pairs vs unpaired rows, dtype and device kind, and the library versions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from objectives.registry import objective_of
from sweep.config.schema import PrefsweepConfig

CACHE_FORMAT = 2  # 2: entries shared under the storage, keyed with the tokenization's parts
_SMALL_FILE = 64 << 20  # hashed whole; larger weight files by size + three 4 MiB samples
_SAMPLE = 4 << 20


def model_identity(name_or_path: str) -> str:
    """What a model/tokenizer is, stable across nodes: builtin -> recipe hash; local dir ->
    content hash (no mtimes: each node may hold its own copy); hub id -> cached snapshot commit."""
    from sweep.models.builtin import builtin_identity, is_builtin

    if is_builtin(name_or_path):
        return f"{name_or_path}@{builtin_identity(name_or_path)}"
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return f"dir:{_dir_digest(local)}"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(found, str):
            return f"hub:{name_or_path}@{Path(found).parent.name}"  # .../snapshots/COMMIT/config.json
    except Exception:  # no hub client or cache: fall back to the name
        pass
    return f"hub:{name_or_path}"


def _dir_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(directory)}\0{size}\0".encode())
        with path.open("rb") as f:
            if size <= _SMALL_FILE:
                digest.update(f.read())
            else:  # head, middle and tail: trained weights change everywhere, so this sees them
                for offset in (0, size // 2, size - _SAMPLE):
                    f.seek(offset)
                    digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def data_digest(data) -> str:
    """Hash of the loaded records (after parsing, renames and the eval split)."""
    digest = hashlib.sha256()
    for split in ("train", "eval"):
        digest.update(f"\0{split}\0".encode())
        for record in getattr(data, split):
            digest.update(json.dumps(dataclasses.asdict(record), sort_keys=True).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def token_parts(cfg: PrefsweepConfig, data_hash: str) -> dict[str, Any]:
    """What a tokenization of the rows depends on (one per distinct setting in a study)."""
    import transformers

    return {
        "format": CACHE_FORMAT,
        "tokenizer": model_identity(cfg.model.name_or_path),
        "trust_remote_code": cfg.model.trust_remote_code,
        "data": data_hash,
        "rows": "pairs" if objective_of(cfg.objective).paired else "completions",
        "max_length": cfg.data.max_length,
        "max_prompt_length": cfg.data.max_prompt_length,
        "transformers": transformers.__version__,
    }


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def token_key(cfg: PrefsweepConfig, data_hash: str) -> str:
    return _key(token_parts(cfg, data_hash))


def fingerprint(cfg: PrefsweepConfig, data_hash: str) -> tuple[str, dict[str, Any]]:
    """-> (the reference cache key, the parts it hashes: the tokenization's, the reference model,
    dtype, device kind). The parts are stored in the manifest for humans."""
    parts = {
        **token_parts(cfg, data_hash),
        "reference": model_identity(cfg.model.ref_name_or_path or cfg.model.name_or_path),
        "dtype": cfg.model.dtype,
        # On CUDA the reference runs under bf16 autocast, on CPU in float32: different numbers.
        "device": "cuda" if cfg.resources.use_gpu else "cpu",
        "torch": torch.__version__.split("+")[0],
    }
    return _key(parts), parts
