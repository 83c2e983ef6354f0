"""A study's tokenized rows, packed: one flat int32 array per field plus row offsets.

Tokenized once per study and tokenization setting on the driver, then shared through Ray's
object store: numpy arrays travel out of band, so every worker on a node maps the same
memory (no unpickling of Python lists per row, no copy per worker) and builds a row's ids
only when its batch is collated. Rows read back as the `TokenizedPair`s /
`TokenizedCompletion`s that `sweep.data.tokenize` returns.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from objectives.registry import objective_of
from sweep.config.schema import PrefsweepConfig
from sweep.data.tokenize import TokenizedCompletion, TokenizedPair, tokenized_splits
from sweep.storage.fingerprint import data_digest, token_key

_PAIR_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")
_COMPLETION_FIELDS = ("prompt_ids", "completion_ids")


class TokenRows(Sequence):
    """Packed rows of one split; indexing gives back the tokenizer's row objects."""

    def __init__(self, paired: bool, ids: dict[str, np.ndarray], offsets: dict[str, np.ndarray],
                 accepted: np.ndarray | None = None):
        self.paired, self.ids, self.offsets, self.accepted = paired, ids, offsets, accepted

    @classmethod
    def pack(cls, rows: Sequence[TokenizedPair] | Sequence[TokenizedCompletion], paired: bool) -> TokenRows:
        fields = _PAIR_FIELDS if paired else _COMPLETION_FIELDS
        ids, offsets = {}, {}
        for field in fields:
            values = [getattr(row, field) for row in rows]
            offsets[field] = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([len(v) for v in values], out=offsets[field][1:])
            ids[field] = np.fromiter((t for v in values for t in v), dtype=np.int32, count=int(offsets[field][-1]))
        accepted = None if paired else np.array([row.accepted for row in rows], dtype=bool)
        return cls(paired, ids, offsets, accepted)

    def __len__(self) -> int:
        return len(self.offsets["prompt_ids"]) - 1

    def _field(self, field: str, i: int) -> list[int]:
        start, end = self.offsets[field][i], self.offsets[field][i + 1]
        return self.ids[field][start:end].tolist()

    def __getitem__(self, i: int) -> TokenizedPair | TokenizedCompletion:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        if self.paired:
            return TokenizedPair(*(self._field(f, i) for f in _PAIR_FIELDS))
        return TokenizedCompletion(*(self._field(f, i) for f in _COMPLETION_FIELDS), bool(self.accepted[i]))

    def _lengths(self, field: str) -> np.ndarray:
        return np.diff(self.offsets[field])

    def lengths(self) -> np.ndarray:
        """Padded width each row needs (`sweep.engine.length_sampler.item_length`), all at once."""
        if self.paired:
            return self._lengths("prompt_ids") + np.maximum(self._lengths("chosen_ids"), self._lengths("rejected_ids"))
        return self._lengths("prompt_ids") + self._lengths("completion_ids")


@dataclass
class TokenizedData:
    """One tokenization of a study's train and eval rows. `key` names its setting (tokenizer,
    rows, lengths, pairs or rows: `sweep.storage.fingerprint.token_key`)."""

    key: str
    train: TokenRows
    eval: TokenRows
    seconds: float


def tokenize_rows(cfg: PrefsweepConfig, data, *, data_hash: str | None = None) -> TokenizedData:
    """The rows of `data` as the trials of `cfg`'s setting train on them (pairs, or accepted and
    rejected rows for unpaired objectives), tokenized (`sweep.data.tokenize`) and packed."""
    from sweep.models.loading import load_tokenizer

    began = time.perf_counter()
    key = token_key(cfg, data_hash or data_digest(data))
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    paired = objective_of(cfg.objective).paired
    train, eval_ = tokenized_splits(cfg.data, paired, data, tokenizer)
    return TokenizedData(key, TokenRows.pack(train, paired), TokenRows.pack(eval_, paired),
                         time.perf_counter() - began)
