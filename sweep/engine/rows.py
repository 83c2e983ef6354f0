"""The rows a worker trains and evaluates on, and their DataLoaders.

A sweep's workers read the study's one tokenization of their setting from Ray's object store
(`sweep.data.token_rows`, put there by the driver or the study's coordinator); a run given
only the loaded rows (tests, tools) tokenizes them itself. Either way each rank draws its own
shard through the sampler.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
import torch
from torch.utils.data import DataLoader, Dataset

from sweep.config.schema import PrefsweepConfig
from sweep.data.tokenize import tokenized_splits
from sweep.engine.length_sampler import LengthGroupedSampler, lengths_of


def _fetched(value):
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def worker_rows(loop_config: dict[str, Any], cfg: PrefsweepConfig, paired: bool, tokenizer) -> tuple[Sequence, Sequence]:
    """(train rows, eval rows) for this worker's loop."""
    tokens = _fetched(loop_config.get("tokens"))
    if tokens is not None:
        return tokens.train, tokens.eval
    return tokenized_splits(cfg.data, paired, _fetched(loop_config["data"]), tokenizer)


def eval_rows(loop_config: dict[str, Any]) -> list:
    """The eval split's raw rows (generation evaluation needs the prompts' text, which the
    tokenization does not keep); fetched only by runs that evaluate generations."""
    return _fetched(loop_config["data"]).eval


class IndexedRows(Dataset):
    """(index, row) pairs built when a batch asks for them: collators need each row's index
    (the reference cache is indexed by it), and packed rows are only unpacked per batch."""

    def __init__(self, items: Sequence):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return i, self.items[i]


def make_loader(items: Sequence, cfg: PrefsweepConfig, collate, *, batch_size: int, shuffle: bool,
                num_replicas: int = 1, rank: int = 0) -> DataLoader:
    if cfg.train.group_by_length and len(items):
        # A DistributedSampler subclass: prepare_data_loader keeps it and it shards by rank itself.
        sampler = LengthGroupedSampler(lengths_of(items), batch_size, num_replicas=num_replicas, rank=rank,
                                       shuffle=shuffle, seed=cfg.train.seed)
        return DataLoader(IndexedRows(items), batch_size=batch_size, sampler=sampler, collate_fn=collate,
                          drop_last=False)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    return DataLoader(IndexedRows(items), batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=generator, drop_last=False)
