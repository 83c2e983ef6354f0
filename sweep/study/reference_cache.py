"""When and where the study's shared reference passes run (the coordination layer of the
reference cache; the store is `sweep.storage.reference_store`, the pass itself
`sweep.engine.reference_pass`).

A frozen reference model gives every row the same log-prob in every trial, so a sweep of N
trials need not run it N times (nor hold a second model per worker), and a later study with
the same inputs not at all: entries are content-addressed under the storage. Before Tune
starts the driver makes sure of the study's one entry when every trial shares it (computing
it unless an earlier study left it there, valid); when swept parameters change
the entry (model, data lengths, objective), each trial asks for its own, and the study's
coordinator actor makes concurrent trials that need the same missing entry run one pass
between them. Passes run as Ray tasks with one trial worker's resources, outside the trial's
placement group. Whether a trial uses the cache at all is the objective's to say
(`Objective.reference_cache` in the registry), plus `train.reference_cache`.
"""
from __future__ import annotations

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.data.token_rows import TokenizedData
from sweep.engine.reference_pass import compute_and_store
from sweep.storage.fingerprint import fingerprint
from sweep.storage.reference_store import count_passes, entry_dir, is_valid, mark_used
from sweep.study.coordinator import coordinator, task_options


def cache_decision(cfg: PrefsweepConfig) -> tuple[bool, str]:
    """(use the cache?, why) for one trial's config."""
    if not cfg.train.reference_cache:
        return False, "off: train.reference_cache is false"
    use, why = cfg.objective.resolved().reference_cache(cfg.objective)
    return use, ("on" if use else f"off: {why}")


def ensure_entry(cfg: PrefsweepConfig, tokens: TokenizedData | list, storage: str, study_dir: str, *,
                 data_hash: str) -> tuple[str | None, str, bool]:
    """-> (entry dir or None, decision note, whether this call ran a reference pass). `tokens`:
    the rows as trials train on them, or [their object ref]: then, inside Ray, the pass runs as
    a task with trial resources via the study's coordinator; given the rows themselves (tests,
    tools) it runs in this process. A pass's record goes under `study_dir`; the entry, under
    the storage, serves every later study with the same inputs."""
    use, note = cache_decision(cfg)
    if not use:
        return None, note, False
    key, parts = fingerprint(cfg, data_hash)
    entry = entry_dir(storage, key)
    computed = False
    if not is_valid(entry, key):
        if isinstance(tokens, TokenizedData):
            compute_and_store(storage, study_dir, key, parts, cfg.model_dump(mode="json"), tokens)
            computed = True
        else:
            import ray

            computed = ray.get(coordinator(cfg.name).reference.remote(
                storage, study_dir, key, parts, cfg.model_dump(mode="json"), tokens, task_options(cfg)))
    mark_used(entry, cfg.name)
    return entry, f"on: {key}", computed


# Swept keys under these prefixes can change an entry's key (or whether one is used), so the
# driver cannot know the trials' entries up front; trials then compute theirs on first use.
_FINGERPRINT_KEYS = ("model.", "data.", "objective.name", "objective.kl_estimator", "objective.sync_ref_model",
                     "objective.ema_tau", "objective.ld_alpha", "resources.use_gpu", "train.reference_cache")


def prepare_study(cfg: PrefsweepConfig, tokens: list | None, study_dir: str, tracking_uri: str, parent_run_id: str,
                  data_hash: str) -> str | None:
    """Before Tune starts: when every trial shares the study config's entry, make sure it is
    there now (computed, or reused from an earlier study with the same inputs; a failing
    reference model then fails the study before any trial). -> the entry dir, or None when
    trials decide for themselves. `tokens`: [the study's tokenization's ref], None when swept."""
    if tokens is None or any(swept.key.startswith(_FINGERPRINT_KEYS) for swept in walk(cfg.sweep.parameters)):
        return None
    entry, note, _ = ensure_entry(cfg, tokens, cfg.resolved_storage(), study_dir, data_hash=data_hash)
    tracking.set_tags(tracking_uri, parent_run_id, {tracking.CACHE_TAG: note, tracking.PASSES_TAG: count_passes(study_dir)})
    return entry


def for_trial(cfg: PrefsweepConfig, tokens: list, study_dir: str, *, data_hash: str, tracking_uri: str, run_id: str,
              parent_run_id: str) -> str | None:
    """In a trial: the entry for this trial's settings (computed if missing), tagged on its
    MLflow run; a pass run here updates the study's pass count."""
    entry, note, computed = ensure_entry(cfg, tokens, cfg.resolved_storage(), study_dir, data_hash=data_hash)
    tracking.set_tags(tracking_uri, run_id, {tracking.CACHE_TAG: note})
    if computed:
        tracking.set_tags(tracking_uri, parent_run_id, {tracking.PASSES_TAG: count_passes(study_dir)})
    return entry
