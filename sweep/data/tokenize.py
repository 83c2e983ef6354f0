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

from sweep.config.schema import DataConfig
from sweep.data.formats import LabeledCompletion, PreferencePair
from sweep.data.loading import unpair

logger = logging.getLogger(__name__)

_BATCH = 1024


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


def _encode(tokenizer, values: list[str | list[dict]], *, add_generation_prompt: bool = False) -> list[list[int]]:
    """Token ids per value: texts in one batch call (same ids as one call each, much faster),
    message lists through the chat template."""
    out: list[list[int]] = [[] for _ in values]
    text_positions = [i for i, value in enumerate(values) if not isinstance(value, list)]
    if text_positions:
        encoded = tokenizer([values[i] for i in text_positions])["input_ids"]
        for i, ids in zip(text_positions, encoded):
            out[i] = list(ids)
    for i, value in enumerate(values):
        if isinstance(value, list):
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError("conversational data needs a tokenizer with a chat_template")
            encoded = tokenizer.apply_chat_template(
                value, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
            )
            out[i] = list(encoded["input_ids"])
    return out


def encode_prompts(tokenizer, prompts: list[str | list[dict]]) -> list[list[int]]:
    """Prompt ids as training sees them (message lists with the generation prompt), untruncated."""
    return _encode(tokenizer, prompts, add_generation_prompt=True)


def _with_eos(completion: str | list[dict], tokenizer) -> str | list[dict]:
    eos = tokenizer.eos_token
    if isinstance(completion, list) or eos is None or completion.endswith(eos):
        return completion
    return completion + eos


def _tokenize_rows(
    tokenizer, prompts: list, completions: list[list], max_length: int, max_prompt_length: int
) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt_ids, [completion_ids, ...]) per row, split at the TRL boundary, then truncated."""
    if max_length < 2 or max_prompt_length < 1:
        raise ValueError(f"need max_length >= 2 and max_prompt_length >= 1, got {max_length}, {max_prompt_length}")
    for prompt, row_completions in zip(prompts, completions):
        if not all(isinstance(c, list) == isinstance(prompt, list) for c in row_completions):
            raise ValueError("a row's prompt and completions must all be text or all be message lists")
    counts = _Truncations()
    out = []
    for start in range(0, len(prompts), _BATCH):
        chunk_prompts, chunk_completions = prompts[start:start + _BATCH], completions[start:start + _BATCH]
        prompt_ids = _encode(tokenizer, chunk_prompts, add_generation_prompt=True)
        full = iter(_encode(tokenizer, [p + _with_eos(c, tokenizer)
                                        for p, cs in zip(chunk_prompts, chunk_completions) for c in cs]))
        for row_prompt_ids, row_completions in zip(prompt_ids, chunk_completions):
            row_full = [next(full) for _ in row_completions]
            boundary = min(common_prefix_length(row_prompt_ids, ids) for ids in row_full)
            counts.boundary_mismatches += boundary < len(row_prompt_ids)
            out.append(_truncate(row_prompt_ids[:boundary], [ids[boundary:] for ids in row_full],
                                 max_length, max_prompt_length, counts))
    counts.log(len(out))
    return out


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


def tokenize_pairs(
    pairs: Iterable[PreferencePair], tokenizer, *, max_length: int, max_prompt_length: int
) -> list[TokenizedPair]:
    pairs = list(pairs)
    rows = _tokenize_rows(tokenizer, [p.prompt for p in pairs], [[p.chosen, p.rejected] for p in pairs],
                          max_length, max_prompt_length)
    return [TokenizedPair(prompt_ids, chosen_ids, rejected_ids) for prompt_ids, (chosen_ids, rejected_ids) in rows]


def tokenize_completions(
    rows: Iterable[LabeledCompletion], tokenizer, *, max_length: int, max_prompt_length: int
) -> list[TokenizedCompletion]:
    rows = list(rows)
    tokenized = _tokenize_rows(tokenizer, [r.prompt for r in rows], [[r.completion] for r in rows],
                               max_length, max_prompt_length)
    return [TokenizedCompletion(prompt_ids, completion_ids, row.accepted)
            for (prompt_ids, (completion_ids,)), row in zip(tokenized, rows)]


def tokenized_splits(data_cfg: DataConfig, paired: bool, data, tokenizer) -> tuple[list, list]:
    """(train, eval) rows as the engine trains on them: pairs for paired objectives, labelled
    rows otherwise. A sweep over objectives loads pairs once; its kto/pmpo trials split them
    into accepted/rejected rows here. `data_cfg` is the config's `data` section."""

    limits = dict(max_length=data_cfg.max_length, max_prompt_length=data_cfg.max_prompt_length)
    if paired:
        return tokenize_pairs(data.train, tokenizer, **limits), tokenize_pairs(data.eval, tokenizer, **limits)
    return (tokenize_completions(unpair(data.train), tokenizer, **limits),
            tokenize_completions(unpair(data.eval), tokenizer, **limits))
