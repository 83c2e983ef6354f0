"""Where a run's reference log-probs come from: a frozen model, the policy with its LoRA
adapters off, or the study's cached per-row log-probs (the worker's view of the store)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from sweep.engine.sequence_logps import TokenLogps, completion_tokens, forward_logits, sequence_logps
from sweep.storage.reference_store import CacheInvalid, load_entry


class Reference:
    """Where reference log-probs come from: a frozen model, the policy with its LoRA
    adapters switched off, or log-probs cached per example index (computed once per study)."""

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        adapter_host: nn.Module | None = None,
        cached: Tensor | None = None,
    ):
        self.model = model
        self.adapter_host = adapter_host
        self.cached = cached

    @contextlib.contextmanager
    def _module(self) -> Iterator[nn.Module]:
        if self.model is not None:
            yield self.model
        elif self.adapter_host is not None:
            host = getattr(self.adapter_host, "module", self.adapter_host)  # unwrap DDP
            with host.disable_adapter():
                yield host
        else:
            raise RuntimeError("this objective needs a live reference model, but only cached log-probs are loaded")

    @torch.no_grad()
    def logits(self, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
        with self._module() as module:
            return forward_logits(module, batch, prefix)

    @torch.no_grad()
    def tokens(self, batch: dict[str, Tensor]) -> TokenLogps:
        """Per-token log-probs of the completions (a live model only: the cache holds sums)."""
        with self._module() as module:
            return completion_tokens(module, batch)

    @torch.no_grad()
    def logps(self, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
        if self.cached is not None and not prefix:
            rows = self.cached.to(batch["index"].device)[batch["index"]]
            # Pairs are cached as [N, 2] (chosen, rejected); batches stack all chosen rows first.
            return rows.T.reshape(-1) if rows.dim() == 2 else rows
        with self._module() as module:
            return sequence_logps(module, batch, prefix)[0]


def cached_splits(ref_cache, n_train: int, n_eval: int, device) -> tuple[Tensor | None, Tensor | None]:
    """The worker's view of `loop_config["ref_cache"]`: an entry directory (what the driver
    passes), a {"train", "eval"} dict, a bare train tensor, or None -> (train, eval) on `device`.
    Row counts must match the worker's own tokenization, else the entry is for other rows."""
    if ref_cache is None:
        return None, None
    if isinstance(ref_cache, str):
        ref_cache = load_entry(ref_cache)
    if isinstance(ref_cache, Tensor):
        ref_cache = {"train": ref_cache, "eval": None}
    train, eval_ = ref_cache.get("train"), ref_cache.get("eval")
    for split, tensor, rows in (("train", train, n_train), ("eval", eval_, n_eval)):
        if tensor is not None and tensor.shape[0] != rows:
            raise CacheInvalid(f"reference cache has {tensor.shape[0]} {split} rows, this run tokenized {rows}: "
                               "the entry is for other data or settings")
    if eval_ is None and n_eval:
        raise CacheInvalid("reference cache has no eval log-probs but the run has eval rows")
    # Moved once here, not per batch.
    return (None if train is None else train.to(device)), (None if eval_ is None else eval_.to(device))
