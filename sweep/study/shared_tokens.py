"""Tokenize once per study: the rows are tokenized once per distinct setting (tokenizer,
max_length, max_prompt_length, pairs or rows) and every trial's workers and the reference
pass read that one result from Ray's object store (numpy arrays, mapped, not copied, by each
worker on a node).

When no swept parameter can change the setting, the driver tokenizes before Tune starts (so
a tokenizer that fails, fails the study before any trial); otherwise each trial asks the
study's coordinator for its setting's tokenization, made on first use by one Ray task however
many trials ask at once (`sweep.study.coordinator`). The MLflow parent run's
`prefsweep.tokenizations` tag counts them.
"""
from __future__ import annotations

import logging

import ray

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.data.token_rows import tokenize_rows
from sweep.storage.fingerprint import token_key
from sweep.study.coordinator import coordinator, task_options

logger = logging.getLogger(__name__)

# Swept keys under these prefixes can change a trial's tokenization.
_TOKENIZATION_KEYS = ("model.name_or_path", "model.trust_remote_code", "data.", "objective.name")


def tokenization_swept(cfg: PrefsweepConfig) -> bool:
    return any(swept.key.startswith(_TOKENIZATION_KEYS) for swept in walk(cfg.sweep.parameters))


def prepare_study(cfg: PrefsweepConfig, data, data_hash: str, tracking_uri: str, parent_run_id: str) -> list | None:
    """Before Tune starts, in the driver: the study's one tokenization, in the object store and
    registered with the coordinator -> [its ref], or None when trials tokenize per setting."""
    if tokenization_swept(cfg):
        return None
    tokens = tokenize_rows(cfg, data, data_hash=data_hash)
    logger.info("tokenized %d train + %d eval rows in %.1fs", len(tokens.train), len(tokens.eval), tokens.seconds)
    box = [ray.put(tokens)]
    count = ray.get(coordinator(cfg.name).add_tokens.remote(tokens.key, box))
    tracking.set_tags(tracking_uri, parent_run_id, {tracking.TOKENIZATIONS_TAG: count})
    return box


def for_trial(cfg: PrefsweepConfig, study: dict, tracking_uri: str, parent_run_id: str) -> list:
    """In a trial: [the ref of this trial's tokenization], made now if it is the first to need it."""
    key = token_key(cfg, study["data_hash"])
    box, count = ray.get(coordinator(cfg.name).tokens.remote(
        key, cfg.model_dump(mode="json"), study["data"], study["data_hash"], task_options(cfg)))
    if count is not None:
        tracking.set_tags(tracking_uri, parent_run_id, {tracking.TOKENIZATIONS_TAG: count})
    return box
