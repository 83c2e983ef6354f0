"""The reference pass: per-row log-probs of a frozen reference model over a study's train
and eval rows, the very rows (the study's one tokenization, `sweep.data.token_rows`) in the
order the training loop indexes them, written to the reference store
(`sweep.storage.reference_store`). Runs as one Ray task per cache entry (scheduled by
`sweep.study.reference_cache`), or in-process outside Ray."""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import Tensor

from objectives.registry import objective_of
from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import TokenizedData
from sweep.engine.collate import CompletionCollator, PairCollator
from sweep.engine.length_sampler import lengths_of
from sweep.engine.precision import autocast_context
from sweep.engine.reference import Reference
from sweep.models.loading import load_causal_lm, load_tokenizer
from sweep.storage.reference_store import entry_dir, record_pass, write_entry

logger = logging.getLogger(__name__)


@torch.no_grad()
def compute_reference_logps(cfg: PrefsweepConfig, tokens: TokenizedData, device: Any = None) -> dict[str, Tensor]:
    """Per-row reference log-probs of the tokenized rows the trials train on, in the same
    order (the worker indexes them by batch["index"]). Pairs -> [N, 2] (chosen, rejected);
    labelled completions -> [N]."""
    device = torch.device(device or "cpu")
    objective = objective_of(cfg.objective)
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    splits = {"train": tokens.train, "eval": tokens.eval}
    model = load_causal_lm(cfg.model.ref_name_or_path or cfg.model.name_or_path, dtype=cfg.model.dtype,
                           trust_remote_code=cfg.model.trust_remote_code).eval().to(device)
    model.requires_grad_(False)
    reference = Reference(model=model)
    pad_id = tokenizer.pad_token_id
    collate = PairCollator(pad_id) if objective.paired else CompletionCollator(pad_id)
    budget = token_budget(model, device)
    out: dict[str, Tensor] = {}
    for split, items in splits.items():
        result = torch.zeros((len(items), 2) if objective.paired else (len(items),), dtype=torch.float32)
        lengths = lengths_of(items)
        order = sorted(range(len(items)), key=lengths.__getitem__)  # little padding
        start = 0
        while start < len(order):
            rows_each = 2 if objective.paired else 1
            end = start + 1
            while end < len(order) and (end - start + 1) * rows_each * lengths[order[end]] <= budget:
                end += 1
            chunk = order[start:end]
            batch = {k: v.to(device) for k, v in collate([(i, items[i]) for i in chunk]).items()}
            with autocast_context(cfg, device):
                logps = reference.logps(batch).float().cpu()
            index = torch.tensor(chunk)
            if objective.paired:
                result[index] = torch.stack(logps.chunk(2), dim=1)
            else:
                result[index] = logps
            start = end
        out[split] = result
    return out


def token_budget(model, device: torch.device) -> int:
    """Padded tokens per batch of the pass. On CPU, batches beyond a couple of thousand tokens
    run slower per token (activations fall out of cache); on GPU larger batches fill the device.
    Logits ([rows, width, vocab] floats on models without a boolean logits_to_keep) stay
    under ~0.5 GB whatever the vocabulary."""
    by_vocab = (1 << 27) // max(1, model.config.get_text_config().vocab_size)
    return max(256, min(16384 if device.type == "cuda" else 2048, by_vocab))


def compute_and_store(storage: str, study_dir: str, key: str, parts: dict, config: dict, tokens: TokenizedData) -> dict:
    """The body of the reference-pass Ray task (also callable in-process): the entry goes under
    the storage (shared by later studies), the pass record under the study that ran it."""
    cfg = PrefsweepConfig.model_validate(config)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a Ray task's console is a log (see engine.loop.quiet_progress_bars)
    device = "cuda" if cfg.resources.use_gpu and torch.cuda.is_available() else "cpu"
    began = time.perf_counter()
    tensors = compute_reference_logps(cfg, tokens, device)
    manifest = write_entry(entry_dir(storage, key), key, parts, tensors, time.perf_counter() - began)
    record_pass(study_dir, key, manifest)
    logger.info("reference cache: computed %s (%s) in %.1fs", key, manifest["rows"], manifest["seconds"])
    return manifest


