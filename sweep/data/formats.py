"""Preference-data row formats: detection, per-row validation and conversion to records.

Every invalid row becomes one `DataError` naming source, row and column, so a bad file is
fixed in one look; `sweep.data.loading` decides whether to raise it or drop the row (drop_invalid).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Text = str | list[dict]

HH_ASSISTANT = "\n\nAssistant:"

FORMATS_EXPECTED = (
    "paired: prompt, chosen, rejected (text); "
    "hh: chosen, rejected (Anthropic '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts); "
    "conversational: chosen, rejected (message lists) with an optional prompt (message list); "
    "unpaired: text + label, or prompt + completion + label"
)

_ACCEPT = {"1", "true", "accept", "accepted", "chosen", "good"}
_REJECT = {"0", "false", "reject", "rejected", "bad"}


class DataError(ValueError):
    """A data problem located as precisely as known: source, 0-based row, column."""

    def __init__(self, source: str, message: str, row: int | None = None, column: str | None = None):
        self.source = source
        self.row = row
        self.column = column
        self.message = message
        where = [source]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{where[0]}: {', '.join(where[1:])}: {message}" if len(where) > 1 else f"{source}: {message}")

    def __reduce__(self):  # Ray and multiprocessing pickle errors raised in workers
        return (self.__class__, (self.source, self.message, self.row, self.column))


@dataclass(frozen=True)
class PreferencePair:
    prompt: Text
    chosen: Text
    rejected: Text


@dataclass(frozen=True)
class LabeledCompletion:
    prompt: Text
    completion: Text
    accepted: bool


class _RowError(Exception):
    """Raised inside a row parser; the caller adds source and row index."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column
        self.message = message


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def detect_format(rows: list[dict], source: str) -> str:
    """Format from the columns (and value types) of the first row; renames already applied."""
    if not rows:
        raise DataError(source, "no rows")
    first = rows[0]
    columns = set(first)
    pair_like = {"chosen", "rejected"} <= columns
    label_like = "label" in columns and ("text" in columns or {"prompt", "completion"} <= columns)
    found = f"columns found: {sorted(columns)}; expected one of: {FORMATS_EXPECTED}"
    if pair_like and label_like:
        raise DataError(source, f"ambiguous columns (both paired and unpaired); set data.format. {found}")
    if pair_like:
        if _is_messages(first["chosen"]):
            return "conversational"
        return "paired" if "prompt" in columns else "hh"
    if label_like:
        if "text" in columns and {"prompt", "completion"} <= columns:
            raise DataError(source, f"ambiguous columns (text and prompt+completion); set data.columns. {found}")
        return "unpaired"
    raise DataError(source, f"cannot detect the data format; {found}. Map your columns with data.columns")


def _require(row: dict, column: str) -> Any:
    if column not in row:
        raise _RowError(column, "missing column")
    value = row[column]
    if value is None:
        raise _RowError(column, "missing value (null)")
    return value


def _text(row: dict, column: str) -> str:
    value = _require(row, column)
    if not isinstance(value, str):
        raise _RowError(column, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _RowError(column, "empty string")
    return value


def _check_messages(messages: Any, column: str) -> list[dict]:
    if not isinstance(messages, list):
        raise _RowError(column, f"expected a list of messages, got {type(messages).__name__}")
    if not messages:
        raise _RowError(column, "empty message list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _RowError(column, f"message {i}: expected {{'role': str, 'content': str}}")
        if not isinstance(message.get("content"), str):
            raise _RowError(column, f"message {i}: content must be a string, got {type(message.get('content')).__name__}")
    return messages


def _messages(row: dict, column: str) -> list[dict]:
    messages = _check_messages(_require(row, column), column)
    # Parquet/Arrow give every message the union of keys (e.g. tool_calls=None); templates only need these.
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def _check_completion(messages: list[dict], column: str) -> None:
    if not messages:
        raise _RowError(column, "no completion: the conversation is entirely shared with the other one")
    if messages[0]["role"] != "assistant":
        raise _RowError(column, f"completion must start with an assistant message, got role {messages[0]['role']!r}")
    if not any(m["content"].strip() for m in messages):
        raise _RowError(column, "empty completion")


def _text_or_messages(row: dict, column: str) -> Text:
    value = _require(row, column)
    return _messages(row, column) if isinstance(value, list) else _text(row, column)


def _paired(row: dict) -> PreferencePair:
    return PreferencePair(_text(row, "prompt"), _text(row, "chosen"), _text(row, "rejected"))


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) as eric-mitchell/direct-preference-optimization's
    `extract_anthropic_prompt`: the prompt runs up to and including the last '\\n\\nAssistant:'."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        raise _RowError("chosen", f"no {HH_ASSISTANT!r} in the transcript")
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt):
        raise _RowError("rejected", "does not share the chosen transcript's prompt (up to its last '\\n\\nAssistant:')")
    chosen_completion, rejected_completion = chosen[len(prompt):], rejected[len(prompt):]
    if not chosen_completion.strip():
        raise _RowError("chosen", "empty completion after the last '\\n\\nAssistant:'")
    if not rejected_completion.strip():
        raise _RowError("rejected", "empty completion after the last '\\n\\nAssistant:'")
    return prompt, chosen_completion, rejected_completion


def _hh(row: dict) -> PreferencePair:
    return PreferencePair(*split_hh(_text(row, "chosen"), _text(row, "rejected")))


def _conversational(row: dict) -> PreferencePair:
    chosen, rejected = _messages(row, "chosen"), _messages(row, "rejected")
    if row.get("prompt") is not None:
        prompt = _messages(row, "prompt")
    else:
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise _RowError("chosen", "chosen and rejected share no leading messages to use as the prompt")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    _check_completion(chosen, "chosen")
    _check_completion(rejected, "rejected")
    return PreferencePair(prompt, chosen, rejected)


def parse_label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _ACCEPT:
            return True
        if word in _REJECT:
            return False
    raise _RowError(
        "label",
        f"unrecognised label {value!r}; use true/false, 1/0, accept(ed)/reject(ed), chosen/rejected or good/bad",
    )


def _unpaired(row: dict) -> LabeledCompletion:
    if "completion" in row or "text" not in row:
        prompt, completion = _text_or_messages(row, "prompt"), _text_or_messages(row, "completion")
        if isinstance(prompt, list) != isinstance(completion, list):
            raise _RowError("completion", "prompt and completion must both be text or both be message lists")
        if isinstance(completion, list):
            _check_completion(completion, "completion")
    else:
        # A bare text row has no prompt: the whole text is the completion, scored unconditionally.
        prompt, completion = "", _text(row, "text")
    return LabeledCompletion(prompt, completion, parse_label(_require(row, "label")))


ROW_PARSERS: dict[str, Callable[[dict], PreferencePair | LabeledCompletion]] = {
    "paired": _paired,
    "hh": _hh,
    "conversational": _conversational,
    "unpaired": _unpaired,
}


def parse_rows(
    rows: list[dict], fmt: str, source: str
) -> tuple[list[PreferencePair | LabeledCompletion], list[DataError]]:
    """Records for the valid rows and one DataError per invalid row, in file order."""
    parser = ROW_PARSERS[fmt]
    records: list[PreferencePair | LabeledCompletion] = []
    errors: list[DataError] = []
    for index, row in enumerate(rows):
        try:
            records.append(parser(row))
        except _RowError as err:
            errors.append(DataError(source, err.message, row=index, column=err.column))
    return records, errors
