"""Tokenization of preference records, step for step as TRL 1.16's DPOTrainer (`tokenize_fn`),
so that log-probs, and therefore losses, equal TRL's on the same data:

1. text: append the EOS *text* to each completion unless it already ends with it (TRL's `add_eos`);
   conversational: nothing, the chat template closes turns.
2. prompt_ids = tokenize(prompt); full_ids = tokenize(prompt + completion). Text goes through
   `tokenizer(text)` with its default special tokens, as TRL's `_tokenize`; message lists through
   `apply_chat_template` (prompt alone with add_generation_prompt=True).
3. The completion starts at the common prefix length of prompt_ids and full_ids (for pairs, the
   minimum over chosen and rejected): templates and BPE merges can make the prompt tokens differ at
   the boundary, and TRL trains on the shared prefix only.

Then our truncation (TRL only cuts the whole sequence at max_length): the prompt keeps its last
`max_prompt_length` tokens, each completion is cut from the right to fit `max_length`. Rows are
never dropped; truncation is counted and logged.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sweep.formats import LabeledCompletion, PreferencePair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


@dataclass(frozen=True)
class TokenizedCompletion:
    prompt_ids: list[int]
    completion_ids: list[int]
    accepted: bool


@dataclass
class _Truncations:
    prompts: int = 0
    completions: int = 0
    boundary_mismatches: int = 0

    def log(self, rows: int) -> None:
        if self.prompts or self.completions:
            logger.info(
                "tokenization: %d of %d prompts left-truncated, %d completions right-truncated",
                self.prompts, rows, self.completions,
            )
        if self.boundary_mismatches:
            logger.warning(
                "tokenization: in %d of %d rows the tokenized prompt is not a prefix of prompt+completion "
                "(chat template or token merges at the boundary); the completion starts where they diverge, "
                "as in TRL", self.boundary_mismatches, rows,
            )


def common_prefix_length(ids: list[int], other_ids: list[int]) -> int:
    length = 0
    for token, other in zip(ids, other_ids):
        if token != other:
            break
        length += 1
    return length


def _ids(tokenizer, value: str | list[dict], *, add_generation_prompt: bool = False) -> list[int]:
    if isinstance(value, list):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("conversational data needs a tokenizer with a chat_template")
        encoded = tokenizer.apply_chat_template(
            value, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
        )
        return list(encoded["input_ids"])
    return list(tokenizer(value)["input_ids"])


def _with_eos(completion: str | list[dict], tokenizer) -> str | list[dict]:
    eos = tokenizer.eos_token
    if isinstance(completion, list) or eos is None or completion.endswith(eos):
        return completion
    return completion + eos


def _split(tokenizer, prompt, completions: list) -> tuple[list[int], list[list[int]], bool]:
    """Prompt ids and completion ids at the TRL boundary; flag if the boundary moved into the prompt."""
    if isinstance(prompt, list) != all(isinstance(c, list) for c in completions):
        raise ValueError("prompt and completions must all be text or all be message lists")
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=isinstance(prompt, list))
    full_ids = [_ids(tokenizer, prompt + _with_eos(c, tokenizer)) for c in completions]
    boundary = min(common_prefix_length(prompt_ids, ids) for ids in full_ids)
    return prompt_ids[:boundary], [ids[boundary:] for ids in full_ids], boundary < len(prompt_ids)


def _truncate(
    prompt_ids: list[int], completions: list[list[int]], max_length: int, max_prompt_length: int,
    counts: _Truncations,
) -> tuple[list[int], list[list[int]]]:
    # Every completion keeps at least one token, so the prompt never takes the whole budget.
    keep_prompt = min(max_prompt_length, max_length - 1)
    if len(prompt_ids) > keep_prompt:
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:]
        counts.prompts += 1
    room = max_length - len(prompt_ids)
    cut = []
    for ids in completions:
        if len(ids) > room:
            counts.completions += 1
        cut.append(ids[:room])
    return prompt_ids, cut


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    if max_length < 2 or max_prompt_length < 1:
        raise ValueError(f"need max_length >= 2 and max_prompt_length >= 1, got {max_length}, {max_prompt_length}")


def tokenize_pairs(
    pairs: Iterable[PreferencePair], tokenizer, *, max_length: int, max_prompt_length: int
) -> list[TokenizedPair]:
    _check_lengths(max_length, max_prompt_length)
    counts = _Truncations()
    out = []
    for pair in pairs:
        prompt_ids, (chosen_ids, rejected_ids), moved = _split(tokenizer, pair.prompt, [pair.chosen, pair.rejected])
        counts.boundary_mismatches += moved
        prompt_ids, (chosen_ids, rejected_ids) = _truncate(
            prompt_ids, [chosen_ids, rejected_ids], max_length, max_prompt_length, counts
        )
        out.append(TokenizedPair(prompt_ids, chosen_ids, rejected_ids))
    counts.log(len(out))
    return out


def tokenize_completions(
    rows: Iterable[LabeledCompletion], tokenizer, *, max_length: int, max_prompt_length: int
) -> list[TokenizedCompletion]:
    _check_lengths(max_length, max_prompt_length)
    counts = _Truncations()
    out = []
    for row in rows:
        prompt_ids, (completion_ids,), moved = _split(tokenizer, row.prompt, [row.completion])
        counts.boundary_mismatches += moved
        prompt_ids, (completion_ids,) = _truncate(prompt_ids, [completion_ids], max_length, max_prompt_length, counts)
        out.append(TokenizedCompletion(prompt_ids, completion_ids, row.accepted))
    counts.log(len(out))
    return out
