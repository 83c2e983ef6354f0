"""The recipe of `builtin:tiny-gpt2-sft`: `builtin:tiny-gpt2` briefly fine-tuned on the demo
train prompts with *both* their chosen and their rejected answers.

So the reference model of the demo answers well and badly about half the time each, as an SFT
model does before preference tuning in the DPO paper's setting, and DPO's job is to move it
towards the preferred half. (The random-init base talks gibberish, against which win rates
say little.)

Deterministic: a fixed example order, the base's weights, one CPU thread and deterministic
kernels, so a rebuild on the same kind of machine gives the same bytes. The caller (sweep.models.builtin)
names the cache directory after a hash of everything here, the base recipe and the data file.
"""
from __future__ import annotations

import random
from pathlib import Path

SFT_RECIPE = {
    "epochs": 12,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "warmup_steps": 20,
    "weight_decay": 0.0,
    "max_length": 128,
    "max_prompt_length": 64,
    "order_seed": 11,
    "torch_seed": 5,
}


def sft_sequences(rows: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt_ids, completion_ids) for every row's chosen and rejected answer, split and
    truncated exactly as training tokenizes pairs (so the model learns to end with EOS)."""
    from sweep.data.formats import PreferencePair
    from sweep.data.tokenize import tokenize_pairs

    pairs = [PreferencePair(prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"]) for r in rows]
    tokenized = tokenize_pairs(pairs, tokenizer, max_length=SFT_RECIPE["max_length"],
                               max_prompt_length=SFT_RECIPE["max_prompt_length"])
    return [(t.prompt_ids, ids) for t in tokenized for ids in (t.chosen_ids, t.rejected_ids)]


def train_sft(base_dir: Path, out_dir: Path, rows: list[dict]) -> None:
    """Completion-only next-token loss over every answer, AdamW with warm-up and linear decay."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = SFT_RECIPE
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    examples = sft_sequences(rows, tokenizer)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(recipe["torch_seed"])
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"],
                                      weight_decay=recipe["weight_decay"])
        per_epoch = (len(examples) + recipe["batch_size"] - 1) // recipe["batch_size"]
        total = per_epoch * recipe["epochs"]
        warmup = recipe["warmup_steps"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
        order = random.Random(recipe["order_seed"])
        pad_id = tokenizer.pad_token_id
        for _ in range(recipe["epochs"]):
            indices = list(range(len(examples)))
            order.shuffle(indices)
            for start in range(0, len(indices), recipe["batch_size"]):
                batch = [examples[i] for i in indices[start:start + recipe["batch_size"]]]
                input_ids, attention, labels = _batch(batch, pad_id)
                loss = model(input_ids=input_ids, attention_mask=attention, labels=labels, use_cache=False).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _batch(batch: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(p) + len(c) for p, c in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)  # -100: no loss (prompt, padding)
    for row, (prompt, completion) in enumerate(batch):
        n = len(prompt) + len(completion)
        input_ids[row, :n] = torch.tensor(prompt + completion)
        attention[row, :n] = 1
        labels[row, len(prompt):n] = torch.tensor(completion)
    return input_ids, attention, labels
