"""Completing the study's fixed eval prompts: which prompts, how they are tokenized, batched
generation, and the per-sequence log-probs of what was generated.

The same prompts, seed and settings for every trial and for the reference model (common random
numbers): differences between trials come from the models, not from the draw."""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sweep.config.evaluation import EvaluationConfig
from sweep.data.tokenize import encode_prompts
from sweep.engine.sequence_logps import sequence_logps
from sweep.evaluation.sampling import sampling_kwargs


def eval_prompts(rows: Sequence, count: int, seed: int) -> list:
    """The first `count` distinct prompts of the eval rows in a seeded shuffle: the same for
    every trial of a study (rows are PreferencePair or LabeledCompletion; prompts are text or
    message lists)."""
    seen, unique = set(), []
    for row in rows:
        key = repr(row.prompt)
        if key not in seen:
            seen.add(key)
            unique.append(row.prompt)
    random.Random(seed).shuffle(unique)
    return unique[:count]


@dataclass
class PromptSet:
    """The eval prompts as the models read them: token ids (left-truncated like training) and
    the text a judge reads (the decoded ids, so message lists become the chat template's text)."""

    ids: list[list[int]]
    texts: list[str]

    def shard(self, rank: int, world: int) -> tuple[list[int], PromptSet]:
        """This worker's prompts under DDP: every world-th, starting at its rank."""
        picked = list(range(rank, len(self.ids), world))
        return picked, PromptSet([self.ids[i] for i in picked], [self.texts[i] for i in picked])


def prompt_set(prompts: list, tokenizer, max_prompt_length: int) -> PromptSet:
    ids = [p[-max_prompt_length:] for p in encode_prompts(tokenizer, prompts)]
    return PromptSet(ids, [tokenizer.decode(p, skip_special_tokens=True) for p in ids])


def _until_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """A generated row up to and including its first EOS (the rest is padding)."""
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompt_ids: list[list[int]], ecfg: EvaluationConfig, device,
             seed_offset: int = 0) -> list[list[int]]:
    """Completion token ids per prompt (EOS kept when generated). Batches are left-padded; each
    batch draws from its own seeded generator state so a trial's samples do not depend on what
    it did before (training draws from the same global RNG)."""
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        for number, start in enumerate(range(0, len(prompt_ids), ecfg.batch_size)):
            chunk = prompt_ids[start:start + ecfg.batch_size]
            width = max(len(p) for p in chunk)
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(ecfg.seed * 1_000_003 + seed_offset * 1009 + number)
                generated = model.generate(input_ids=input_ids, attention_mask=attention,
                                           max_new_tokens=ecfg.max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                                           **sampling_kwargs(ecfg.temperature, ecfg.top_p))
            out += [_until_eos(row.tolist(), eos) for row in generated[:, width:]]
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def completion_logps(model: nn.Module, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                     device, batch_size: int = 16) -> list[float]:
    """log p(completion | prompt) per row under `model` (the engine's own log-prob path); an
    empty completion has log-prob 0."""
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompt_ids), batch_size):
            prompts, completions = prompt_ids[start:start + batch_size], completion_ids[start:start + batch_size]
            width = max(len(p) + len(c) for p, c in zip(prompts, completions))
            ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            completion_mask = torch.zeros_like(ids)
            for row, (p, c) in enumerate(zip(prompts, completions)):
                ids[row, :len(p) + len(c)] = torch.tensor(p + c)
                attention[row, :len(p) + len(c)] = 1
                completion_mask[row, len(p):len(p) + len(c)] = 1
            batch = {"input_ids": ids.to(device), "attention_mask": attention.to(device),
                     "completion_mask": completion_mask.to(device)}
            sums, _ = sequence_logps(model, batch)
            out += sums.float().cpu().tolist()
    finally:
        model.train(was_training)
    return out
