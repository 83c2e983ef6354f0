"""Reference log-probs computed once per study and shared by every trial.

A frozen reference model gives every row the same log-prob in every trial, so a sweep of N
trials need not run it N times (nor hold a second model per worker). The driver computes the
per-sequence log-probs of the train and eval rows once, as a Ray task on one trial's worth of
resources, and stores them under the study:

    NAME/refcache/KEY/manifest.json               fingerprint, row counts, sha256 of the tensors
    NAME/refcache/KEY/logps-SHA16.safetensors     {"train": [N,2] or [N], "eval": [M,2] or [M]}
    NAME/refcache/passes/*.json                   one record per reference pass (the counter)

KEY is a hash of everything the numbers depend on (`sweep.reffingerprint`): reference model
identity, tokenizer, the loaded rows, max_length/max_prompt_length, pairs vs unpaired rows,
dtype and device kind. A trial whose swept parameters change any of these gets its own entry, computed
on first use; an entry that fails its checksum, shapes or fingerprint is recomputed, never
trusted. Writes are atomic: the tensor file is named after its checksum and the manifest,
written last through a temp file + rename, is the commit.

When the cache is not used (`cache_decision`): train.reference_cache false, objectives with no
reference (simpo, orpo), and pmpo's exact KL, which needs the reference's full next-token
distributions. KTO caches its matched rows only: its KL rows pair prompt i with the completion
of another row *of the same batch*, so they depend on batch composition and stay live.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import Tensor

from objectives.registry import get_objective
from sweep.config import REFCACHE, PrefsweepConfig
from sweep.reffingerprint import CACHE_FORMAT, fingerprint
from sweep.study import filesystem, join

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PASSES = "passes"
PASSES_TAG = "prefsweep.reference_passes"
CACHE_TAG = "prefsweep.reference_cache"


class CacheInvalid(ValueError):
    """An entry that is missing, partial, corrupt or for other inputs."""


def cache_decision(cfg: PrefsweepConfig) -> tuple[bool, str]:
    """(use the cache?, why) for one trial's config."""
    objective = get_objective(cfg.objective.name)
    if not cfg.train.reference_cache:
        return False, "off: train.reference_cache is false"
    if not objective.needs_reference:
        return False, f"off: {objective.name} has no reference model"
    if objective.name == "pmpo" and cfg.objective.kl_estimator == "exact":
        return False, "off: pmpo kl_estimator=exact needs the live reference's full distributions"
    return True, "on"


# --- storage -------------------------------------------------------------------------------------

def cache_root(study_dir: str) -> str:
    return join(study_dir, REFCACHE)


def entry_dir(study_dir: str, key: str) -> str:
    return join(cache_root(study_dir), key)


def _read_bytes(path: str) -> bytes | None:
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read()


def _write_atomically(path: str, payload: bytes) -> None:
    fs, inner = filesystem(path)
    parent = inner.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(temp) as stream:
        stream.write(payload)
    fs.move(temp, inner)  # a rename locally; copy + delete on object stores, still all-or-nothing to readers


def load_entry(entry: str, *, key: str | None = None) -> dict[str, Tensor]:
    """The cached {"train", "eval"} log-probs, verified against the manifest; CacheInvalid otherwise."""
    from safetensors.torch import load as load_tensors

    raw = _read_bytes(join(entry, MANIFEST))
    if raw is None:
        raise CacheInvalid(f"{entry}: no manifest (never written, or a write was cut short)")
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise CacheInvalid(f"{entry}: unreadable manifest: {err}") from None
    if manifest.get("format") != CACHE_FORMAT or (key is not None and manifest.get("key") != key):
        raise CacheInvalid(f"{entry}: manifest is for other inputs (key {manifest.get('key')}, expected {key})")
    payload = _read_bytes(join(entry, str(manifest.get("file"))))
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
        if _read_bytes(join(entry, MANIFEST)) is not None:
            logger.warning("reference cache: %s; recomputing", err)
        return False


def write_entry(entry: str, key: str, parts: dict[str, Any], tensors: dict[str, Tensor], seconds: float) -> dict:
    from safetensors.torch import save as save_tensors

    payload = save_tensors({k: v.contiguous() for k, v in tensors.items()})
    checksum = hashlib.sha256(payload).hexdigest()
    name = f"logps-{checksum[:16]}.safetensors"
    _write_atomically(join(entry, name), payload)
    manifest = {
        "format": CACHE_FORMAT, "key": key, "fingerprint": parts, "file": name, "sha256": checksum,
        "rows_kind": parts["rows"], "rows": {k: int(v.shape[0]) for k, v in tensors.items()},
        "created": time.time(), "seconds": round(seconds, 3),
    }
    _write_atomically(join(entry, MANIFEST), json.dumps(manifest, indent=2).encode())
    _drop_stale_files(entry, keep={name, MANIFEST})
    return manifest


def _drop_stale_files(entry: str, keep: set[str]) -> None:
    fs, inner = filesystem(entry)
    try:
        for info in fs.get_file_info(pafs.FileSelector(inner)):
            if info.base_name not in keep and not info.base_name.startswith(".tmp-"):
                fs.delete_file(info.path)
    except OSError:  # best effort: a leftover file is never read (the manifest names the live one)
        pass


def record_pass(study_dir: str, key: str, manifest: dict) -> None:
    """One file per reference pass: appends are not portable to object stores, new files are."""
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{key[:12]}-{uuid.uuid4().hex[:8]}.json"
    record = {"key": key, "rows": manifest["rows"], "seconds": manifest["seconds"]}
    _write_atomically(join(cache_root(study_dir), PASSES, name), json.dumps(record).encode())


def count_passes(study_dir: str) -> int:
    fs, inner = filesystem(join(cache_root(study_dir), PASSES))
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return 0
    return sum(1 for info in fs.get_file_info(pafs.FileSelector(inner)) if info.base_name.endswith(".json"))


def cached_splits(ref_cache, n_train: int, n_eval: int, device) -> tuple[Tensor | None, Tensor | None]:
    """The worker's view of `loop_config["ref_cache"]`: an entry directory (what the driver
    passes), a {"train", "eval"} dict, a bare train tensor, or None -> (train, eval) on `device`.
    Row counts must match the worker's own tokenization, else the entry is for other rows."""
    if ref_cache is None:
        return None, None
    if isinstance(ref_cache, str):
        ref_cache = load_entry(ref_cache)
    if isinstance(ref_cache, Tensor):
        ref_cache = {"train": ref_cache, "eval": None}
    train, eval_ = ref_cache.get("train"), ref_cache.get("eval")
    for split, tensor, rows in (("train", train, n_train), ("eval", eval_, n_eval)):
        if tensor is not None and tensor.shape[0] != rows:
            raise CacheInvalid(f"reference cache has {tensor.shape[0]} {split} rows, this run tokenized {rows}: "
                               "the entry is for other data or settings")
    if eval_ is None and n_eval:
        raise CacheInvalid("reference cache has no eval log-probs but the run has eval rows")
    # Moved once here, not per batch.
    return (None if train is None else train.to(device)), (None if eval_ is None else eval_.to(device))


# --- the reference pass --------------------------------------------------------------------------

@torch.no_grad()
def compute_reference_logps(cfg: PrefsweepConfig, data, device: Any = None) -> dict[str, Tensor]:
    """Per-row reference log-probs of the rows exactly as the worker loop tokenizes them, in
    the same order (the worker indexes them by batch["index"]). Pairs -> [N, 2] (chosen,
    rejected); labelled completions -> [N]."""
    from objectives.batching import CompletionCollator, PairCollator
    from objectives.sampling import item_length
    from objectives.step import Reference
    from objectives.worker import autocast_context, tokenized_splits
    from sweep.models import load_causal_lm, load_tokenizer

    device = torch.device(device or "cpu")
    objective = get_objective(cfg.objective.name)
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    splits = dict(zip(("train", "eval"), tokenized_splits(cfg, objective, data, tokenizer)))
    model = load_causal_lm(cfg.model.ref_name_or_path or cfg.model.name_or_path, dtype=cfg.model.dtype,
                           trust_remote_code=cfg.model.trust_remote_code).eval().to(device)
    model.requires_grad_(False)
    reference = Reference(model=model)
    pad_id = tokenizer.pad_token_id
    collate = PairCollator(pad_id) if objective.paired else CompletionCollator(pad_id)
    budget = token_budget(model, device)
    out: dict[str, Tensor] = {}
    for split, items in splits.items():
        result = torch.zeros((len(items), 2) if objective.paired else (len(items),), dtype=torch.float32)
        order = sorted(range(len(items)), key=lambda i: item_length(items[i]))  # little padding
        start = 0
        while start < len(order):
            rows_each = 2 if objective.paired else 1
            end = start + 1
            while end < len(order) and (end - start + 1) * rows_each * item_length(items[order[end]]) <= budget:
                end += 1
            chunk = order[start:end]
            batch = {k: v.to(device) for k, v in collate([(i, items[i]) for i in chunk]).items()}
            with autocast_context(cfg, device):
                logps = reference.logps(batch).float().cpu()
            index = torch.tensor(chunk)
            if objective.paired:
                result[index] = torch.stack(logps.chunk(2), dim=1)
            else:
                result[index] = logps
            start = end
        out[split] = result
    return out


def token_budget(model, device: torch.device) -> int:
    """Padded tokens per batch of the pass. On CPU, batches beyond a couple of thousand tokens
    run slower per token (activations fall out of cache); on GPU larger batches fill the device.
    Logits ([rows, width, vocab] floats on models without a boolean logits_to_keep) stay
    under ~0.5 GB whatever the vocabulary."""
    by_vocab = (1 << 27) // max(1, model.config.get_text_config().vocab_size)
    return max(256, min(16384 if device.type == "cuda" else 2048, by_vocab))


def compute_and_store(study_dir: str, key: str, parts: dict, config: dict, data) -> dict:
    """The body of the reference-pass Ray task (also callable in-process)."""
    cfg = PrefsweepConfig.model_validate(config)
    device = "cuda" if cfg.resources.use_gpu and torch.cuda.is_available() else "cpu"
    began = time.perf_counter()
    tensors = compute_reference_logps(cfg, data, device)
    manifest = write_entry(entry_dir(study_dir, key), key, parts, tensors, time.perf_counter() - began)
    record_pass(study_dir, key, manifest)
    logger.info("reference cache: computed %s (%s) in %.1fs", key, manifest["rows"], manifest["seconds"])
    return manifest


def task_options(cfg: PrefsweepConfig) -> dict[str, Any]:
    """One trial worker's resources: the pass runs where a trial could."""
    return {"num_cpus": cfg.resources.cpus_per_worker, "num_gpus": 1 if cfg.resources.use_gpu else 0}


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


def coordinator(study_name: str):
    """The study's coordinator actor: the driver creates it before Tune starts; trials find it
    by name (a trial of a resumed study creates it if the driver has not)."""
    import ray

    actor = ray.remote(num_cpus=0, max_concurrency=64)(_Coordinator)
    return actor.options(name=f"prefsweep-refcache-{study_name}", get_if_exists=True).remote()


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


# --- driver hooks ----------------------------------------------------------------------------------

# Swept keys under these prefixes can change an entry's key (or whether one is used), so the
# driver cannot know the trials' entries up front; trials then compute theirs on first use.
_FINGERPRINT_KEYS = ("model.", "data.", "objective.name", "objective.kl_estimator", "resources.use_gpu",
                     "train.reference_cache")


def prepare_study(cfg: PrefsweepConfig, data, study_dir: str, tracking_uri: str, parent_run_id: str) -> str | None:
    """Before Tune starts: create the study's coordinator and, when every trial shares the
    study config's entry, compute it now (a failing reference model then fails the study
    before any trial). -> the entry dir, or None when trials decide for themselves."""
    from sweep import tracking

    coordinator(cfg.name)
    if any(key.startswith(_FINGERPRINT_KEYS) for key in cfg.sweep.parameters):
        return None
    entry, note, _ = ensure_entry(cfg, data, study_dir)
    tracking.set_tags(tracking_uri, parent_run_id, {CACHE_TAG: note, PASSES_TAG: count_passes(study_dir)})
    return entry


def for_trial(cfg: PrefsweepConfig, data, study_dir: str, *, data_ref, tracking_uri: str, run_id: str,
              parent_run_id: str) -> str | None:
    """In a trial: the entry for this trial's settings (computed if missing), tagged on its
    MLflow run; a pass run here updates the study's pass count."""
    from sweep import tracking

    entry, note, computed = ensure_entry(cfg, data, study_dir, data_ref=data_ref)
    tracking.set_tags(tracking_uri, run_id, {CACHE_TAG: note})
    if computed:
        tracking.set_tags(tracking_uri, parent_run_id, {PASSES_TAG: count_passes(study_dir)})
    return entry
