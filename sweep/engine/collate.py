"""Collation of tokenized examples into padded tensors.

Chosen and rejected sequences of a pair batch are stacked ([chosen..., rejected...]) so the
policy sees them in one forward pass. Padding is to the batch's own longest row, on the
right; pad positions are masked out of attention and out of the completion mask.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sweep.data.tokenize import TokenizedCompletion, TokenizedPair


def pad_sequences(prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int) -> dict[str, Tensor]:
    """Rows prompt+completion, right-padded. -> input_ids, attention_mask, completion_mask [N, T]."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    completion_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        n = len(prompt) + len(completion)
        input_ids[row, :n] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :n] = 1
        completion_mask[row, len(prompt):n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


class PairCollator:
    """Batch of B pairs -> tensors of 2B rows: chosen rows 0..B-1, rejected rows B..2B-1."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[int, TokenizedPair]]) -> dict[str, Tensor]:
        indices = [index for index, _ in items]
        pairs = [pair for _, pair in items]
        prompts = [p.prompt_ids for p in pairs] * 2
        completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        batch = pad_sequences(prompts, completions, self.pad_id)
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        return batch


class CompletionCollator:
    """Batch of B labelled completions -> [B, T] tensors plus `accepted` [B].

    With `mismatched=True` it also builds KTO's KL rows: prompt i with completion i-1
    (cyclically), the rotation TRL's KTOTrainer applies, under the `kl_` prefix.
    """

    def __init__(self, pad_id: int, mismatched: bool = False):
        self.pad_id = pad_id
        self.mismatched = mismatched

    def __call__(self, items: Sequence[tuple[int, TokenizedCompletion]]) -> dict[str, Tensor]:
        rows = [row for _, row in items]
        batch = pad_sequences([r.prompt_ids for r in rows], [r.completion_ids for r in rows], self.pad_id)
        batch["accepted"] = torch.tensor([r.accepted for r in rows], dtype=torch.bool)
        batch["index"] = torch.tensor([index for index, _ in items], dtype=torch.long)
        if self.mismatched:
            shifted = [rows[i - 1].completion_ids for i in range(len(rows))]
            kl = pad_sequences([r.prompt_ids for r in rows], shifted, self.pad_id)
            batch.update({f"kl_{key}": value for key, value in kl.items()})
        return batch
