"""Per-sequence completion log-probs of a model over a collated batch, and the per-token
values some objectives reduce differently (LD-DPO's tails, WPO's weights)."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sweep.engine.chunked_head import head_logps


def forward_logits(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
    return model(
        input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"], use_cache=False
    ).logits


@dataclass
class TokenLogps:
    """The completion tokens of a batch of N sequences, K tokens in all, row-major.

    values: [K] log p(token | prefix) (with gradient); rows: [K] the sequence of each token;
    positions: [K] 1-based position of each token within its completion; counts: [N] completion
    tokens per sequence; log_sum_sq: [K] log sum_v p(v)^2 of each next-token distribution,
    without gradient, when asked for (WPO)."""

    values: Tensor
    rows: Tensor
    positions: Tensor
    counts: Tensor
    log_sum_sq: Tensor | None = None

    def sums(self, values: Tensor | None = None, where: Tensor | None = None) -> Tensor:
        """[N] per-sequence sums of `values` (default: the log-probs) over the tokens where `where`."""
        values = self.values if values is None else values
        if where is not None:
            values = values * where
        return values.new_zeros(self.counts.shape[0]).index_add(0, self.rows, values)


def _token_stats(logits: Tensor, labels: Tensor, squares: bool) -> tuple[Tensor, Tensor | None]:
    """logits [K, V] of the positions predicting `labels` [K] -> (log-probs [K], log sum p^2 [K] or None)."""
    logits = logits.float()
    normaliser = torch.logsumexp(logits, dim=-1)
    values = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - normaliser
    if not squares:
        return values, None
    with torch.no_grad():
        # log sum_v p_v^2 = logsumexp(2 * logits) - 2 * logsumexp(logits)
        return values, torch.logsumexp(2.0 * logits.detach(), dim=-1) - 2.0 * normaliser.detach()


# Models seen to accept a boolean `logits_to_keep` (True) or not (False), so the probe and
# its fallback happen once per model, not per step.
_COMPACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Models whose logits are their output head applied to what enters it (True), or that change
# them after the head (False: soft-capping, scaling); probed on a model's first batch.
_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBED_POSITIONS = 4


def output_head(model: nn.Module) -> nn.Linear | None:
    """The plain linear head whose log-probs `chunked_head` may compute itself; None for a
    compiled model (a hook added per call would recompile it), an adapted (LoRA) or quantized
    head, or a model that does not name one."""
    inner = getattr(model, "module", model)  # DDP
    if getattr(inner, "_compiled_call_impl", None) is not None:
        return None
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if type(head) is nn.Linear else None


def _head_inputs(model: nn.Module, head: nn.Linear, batch: dict[str, Tensor], prefix: str,
                 keep: Tensor) -> Tensor | None:
    """One forward in which the head is fed no positions (a few on the model's first batch, to
    compare the model's logits with the head's own) -> what enters the head at the `keep`
    positions [K, H]; None when that is not the model's logits' whole story."""
    probing = model not in _HEAD
    seen: dict[str, Tensor] = {}

    def feed(_module, args):
        seen["hidden"] = args[0]
        return (args[0][..., :_PROBED_POSITIONS if probing else 0, :], *args[1:])

    handle = head.register_forward_pre_hook(feed)
    try:
        logits = forward_logits(model, batch, prefix)
    finally:
        handle.remove()
    hidden = seen.get("hidden")
    if hidden is None or hidden.dim() != 3 or hidden.shape[:2] != keep.shape:
        _HEAD[model] = False
        return None
    if probing:
        with torch.no_grad():
            own = F.linear(hidden[..., :_PROBED_POSITIONS, :], head.weight, head.bias)
            _HEAD[model] = own.shape == logits.shape and torch.allclose(own.float(), logits.float(), rtol=1e-3,
                                                                         atol=1e-3)
        if not _HEAD[model]:
            return None
    return hidden[keep]


def completion_tokens(model: nn.Module, batch: dict[str, Tensor], prefix: str = "", *,
                      squares: bool = False) -> TokenLogps:
    """The model's log-probs of every completion token. Only the positions that predict a
    completion token go through the LM head, and that a slice of positions at a time
    (`chunked_head`): prompt and pad positions never reach the vocabulary matmul, and no
    [tokens x vocab] tensor is held at once. Models whose head is not a plain linear layer, or
    whose logits are changed after it, go through the model's own head: HF's boolean
    `logits_to_keep` where the model takes it, else full logits. `squares`: also WPO's
    log sum_v p(v)^2."""
    input_ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"]
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = mask[:, 1:].bool()  # position t predicts token t+1
    labels = input_ids[:, 1:][keep[:, :-1]]  # row-major, the order boolean indexing keeps
    rows = keep.nonzero()[:, 0]
    positions = mask[:, 1:].long().cumsum(-1)[keep[:, :-1]]
    counts = mask[:, 1:].sum(-1)
    head = output_head(model)
    if head is not None and _HEAD.get(model, True):
        hidden = _head_inputs(model, head, batch, prefix, keep)
        if hidden is not None:
            values, log_sum_sq = head_logps(hidden, head.weight, head.bias, labels, squares=squares)
            return TokenLogps(values, rows, positions, counts.to(values.dtype), log_sum_sq)
    values, log_sum_sq = _token_stats(_head_logits(model, batch, prefix, keep), labels, squares)
    return TokenLogps(values, rows, positions, counts.to(values.dtype), log_sum_sq)


def _head_logits(model: nn.Module, batch: dict[str, Tensor], prefix: str, keep: Tensor) -> Tensor:
    """[K, V] logits of the `keep` positions from the model's own head."""
    if _COMPACT.get(model, True):
        probing = model not in _COMPACT
        try:
            logits = model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"],
                           use_cache=False, logits_to_keep=keep).logits
            fits = logits.dim() == 2 and logits.shape[0] == int(keep.sum())
        except (TypeError, ValueError, IndexError, RuntimeError):
            if not probing:
                raise
            fits = False
        if probing:
            _COMPACT[model] = fits
        if fits:
            return logits
    return forward_logits(model, batch, prefix)[keep]


def sequence_logps(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> tuple[Tensor, Tensor]:
    """-> (sum of completion-token log-probs [N], completion-token counts [N]), as
    `objectives.logprobs.completion_logps(forward_logits(...))` computes them."""
    tokens = completion_tokens(model, batch, prefix)
    return tokens.sums(), tokens.counts

