"""Preference data for training: read a source, rename columns, detect the format, validate
every row, split off evaluation rows and shape records for the objective (paired or not).

Formats and their rows (`sweep.data.formats`):
- paired: prompt, chosen, rejected text (extra columns such as static-hh's `response` are ignored);
- hh: Anthropic transcripts in chosen/rejected, split at the last "\\n\\nAssistant:";
- conversational: message lists, prompt + chosen + rejected, or chosen/rejected whole conversations
  whose common leading messages are the prompt;
- unpaired: prompt + completion + label (text or message lists), or text + label with prompt "".
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from sweep.config.schema import DataConfig, DataSource
from sweep.data.formats import (
    DataError,
    LabeledCompletion,
    PreferencePair,
    detect_format,
    parse_rows,
)
from sweep.data.sources import read_rows

__all__ = [
    "DataError",
    "LabeledCompletion",
    "PreferenceData",
    "PreferencePair",
    "load_preference_data",
    "read_rows",
    "rename_columns",
    "split_eval",
    "unpair",
]

logger = logging.getLogger(__name__)


@dataclass
class PreferenceData:
    train: list[PreferencePair] | list[LabeledCompletion]
    eval: list[PreferencePair] | list[LabeledCompletion]
    format: str
    paired: bool
    dropped: int
    sources: dict[str, str | None] = field(default_factory=dict)

    def summary(self) -> dict:
        summary: dict = {
            "format": self.format,
            "paired": self.paired,
            "train_rows": len(self.train),
            "eval_rows": len(self.eval),
            "dropped": self.dropped,
            "sources": dict(self.sources),
        }
        if not self.paired:
            for split, rows in (("train", self.train), ("eval", self.eval)):
                accepted = sum(1 for row in rows if row.accepted)
                summary[f"{split}_accepted"] = accepted
                summary[f"{split}_rejected"] = len(rows) - accepted
        return summary


@dataclass
class _Loaded:
    records: list[PreferencePair] | list[LabeledCompletion]
    format: str
    description: str
    dropped: int


def load_preference_data(data: DataConfig, *, paired: bool, seed: int = 0) -> PreferenceData:
    """Train and eval records. `paired=False` turns each pair into an accepted and a rejected row;
    `paired=True` rejects unpaired data. Eval comes from `data.eval`, else a seeded
    `eval_fraction` split of train, else is empty."""
    train = _load(data.train, data, paired=paired)
    dropped = train.dropped
    if data.eval is not None:
        loaded_eval = _load(data.eval, data, paired=paired)
        train_records, eval_records = train.records, loaded_eval.records
        dropped += loaded_eval.dropped
        eval_description: str | None = loaded_eval.description
    elif data.eval_fraction is not None:
        # Split pairs before unpairing, so a pair's two rows never straddle train and eval.
        train_records, eval_records = split_eval(train.records, data.eval_fraction, seed, train.description)
        eval_description = f"eval_fraction {data.eval_fraction} of {train.description} (seed {seed})"
    else:
        train_records, eval_records, eval_description = train.records, [], None
    if not paired:
        train_records, eval_records = unpair(train_records), unpair(eval_records)
    return PreferenceData(
        train=train_records,
        eval=eval_records,
        format=train.format,
        paired=paired,
        dropped=dropped,
        sources={"train": train.description, "eval": eval_description},
    )


def _load(source: DataSource, data: DataConfig, *, paired: bool) -> _Loaded:
    rows, description = read_rows(source)
    if not rows:
        raise DataError(description, "no rows")
    rows = rename_columns(rows, data.columns, description)
    fmt = detect_format(rows, description) if data.format == "auto" else data.format
    if paired and fmt == "unpaired":
        raise DataError(
            description,
            "the objective needs paired data (prompt/chosen/rejected) but this source is unpaired "
            "(a label per completion); use an unpaired objective (kto, pmpo) or paired data",
        )
    records, errors = parse_rows(rows, fmt, description)
    file_column = {ours: theirs for ours, theirs in data.columns.items()}
    errors = [
        DataError(e.source, e.message, row=e.row, column=file_column.get(e.column, e.column)) for e in errors
    ]
    if errors and not data.drop_invalid:
        first = errors[0]
        count = f"{len(errors)} invalid rows in all" if len(errors) > 1 else "the only invalid row"
        more = f" ({count}; data.drop_invalid: true drops {'them' if len(errors) > 1 else 'it'})"
        raise DataError(first.source, first.message + more, row=first.row, column=first.column)
    if errors:
        logger.warning(
            "%s: dropped %d of %d rows as invalid (data.drop_invalid: true); first: %s",
            description, len(errors), len(rows), errors[0],
        )
    if not records:
        raise DataError(description, f"no valid rows: all {len(rows)} rows are invalid; first: {errors[0]}")
    return _Loaded(records=records, format=fmt, description=description, dropped=len(errors))


def rename_columns(rows: list[dict], columns: dict[str, str], source: str) -> list[dict]:
    """Apply `data.columns` ({our_name: file_column}); swaps work, since every row is rebuilt."""
    renames = {ours: theirs for ours, theirs in columns.items() if ours != theirs}
    if not renames:
        return rows
    present: set[str] = set()
    for row in rows:
        present.update(row)
    for ours, theirs in renames.items():
        if theirs not in present:
            raise DataError(
                source,
                f"data.columns maps {ours!r} to {theirs!r}, which is not a column of this source; "
                f"columns found: {sorted(present)}",
                column=theirs,
            )
    renamed_away = set(renames.values())
    out = []
    for row in rows:
        new = {key: value for key, value in row.items() if key not in renamed_away}
        for ours, theirs in renames.items():
            if theirs in row:
                new[ours] = row[theirs]
            else:  # the mapped column is what this row lacks; an unmapped same-named column must not stand in
                new.pop(ours, None)
        out.append(new)
    return out


def split_eval(records: list, fraction: float, seed: int, source: str) -> tuple[list, list]:
    """Deterministic held-out split: same rows, fraction and seed give the same split; both
    halves keep file order."""
    n_eval = max(1, round(len(records) * fraction))
    if n_eval >= len(records):
        raise DataError(source, f"eval_fraction {fraction} of {len(records)} rows leaves no training rows")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:n_eval])
    train = [record for i, record in enumerate(records) if i not in held_out]
    eval_ = [record for i, record in enumerate(records) if i in held_out]
    return train, eval_


def unpair(records: list) -> list[LabeledCompletion]:
    """Pairs become an accepted (chosen) and a rejected row each; unpaired rows pass through."""
    out: list[LabeledCompletion] = []
    for record in records:
        if isinstance(record, PreferencePair):
            out.append(LabeledCompletion(record.prompt, record.chosen, True))
            out.append(LabeledCompletion(record.prompt, record.rejected, False))
        else:
            out.append(record)
    return out
