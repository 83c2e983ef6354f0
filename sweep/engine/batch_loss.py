"""One loss evaluation on a collated batch: forward passes, then the objective.

Shared by the worker loop, evaluation, the reference-cache pass and the benchmarks, so the
numbers they report come from the same code.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from objectives.logprobs import completion_logps, exact_kl
from objectives.registry import EXACT_KL, MISMATCHED_KL, Objective
from objectives.types import LossOutput, PairedLogps, UnpairedLogps


def forward_logits(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
    return model(
        input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"], use_cache=False
    ).logits


# Models seen to accept a boolean `logits_to_keep` (True) or not (False), so the probe and
# its fallback happen once per model, not per step.
_COMPACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sequence_logps(model: nn.Module, batch: dict[str, Tensor], prefix: str = "") -> tuple[Tensor, Tensor]:
    """-> (sum of completion-token log-probs [N], completion-token counts [N]), as
    `completion_logps(forward_logits(...))` computes them, but only the positions that
    predict a completion token go through the LM head and the log-softmax (HF's boolean
    `logits_to_keep`): prompt and pad positions never reach the vocabulary matmul, which
    for small models and long prompts is a large share of the step. Models that do not take
    a boolean `logits_to_keep` get the full-logits path."""
    input_ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"]
    if _COMPACT.get(model, True):
        keep = torch.zeros_like(mask, dtype=torch.bool)
        keep[:, :-1] = mask[:, 1:].bool()  # position t predicts token t+1
        probing = model not in _COMPACT
        try:
            logits = model(input_ids=input_ids, attention_mask=batch[f"{prefix}attention_mask"], use_cache=False,
                           logits_to_keep=keep).logits
            fits = logits.dim() == 2 and logits.shape[0] == int(keep.sum())
        except (TypeError, ValueError, IndexError, RuntimeError):
            if not probing:
                raise
            fits = False
        if probing:
            _COMPACT[model] = fits
        if fits:
            logits = logits.float()
            labels = input_ids[:, 1:][keep[:, :-1]]  # row-major, the order boolean indexing keeps
            per_token = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            rows = keep.nonzero()[:, 0]
            sums = per_token.new_zeros(input_ids.shape[0]).index_add(0, rows, per_token)
            return sums, mask[:, 1:].sum(-1).to(sums.dtype)
    logits = forward_logits(model, batch, prefix)
    return completion_logps(logits, input_ids, mask)


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

    @property
    def live(self) -> bool:
        return self.model is not None or self.adapter_host is not None

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
    def logps(self, batch: dict[str, Tensor], prefix: str = "") -> Tensor:
        if self.cached is not None and not prefix:
            rows = self.cached.to(batch["index"].device)[batch["index"]]
            # Pairs are cached as [N, 2] (chosen, rejected); batches stack all chosen rows first.
            return rows.T.reshape(-1) if rows.dim() == 2 else rows
        with self._module() as module:
            return sequence_logps(module, batch, prefix)[0]


def pair_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
              objective: Objective, params) -> LossOutput:
    """batch rows: B chosen then B rejected (see sweep.engine.collate.PairCollator)."""
    sums, counts = sequence_logps(policy, batch)
    half = sums.shape[0] // 2
    ref = reference.logps(batch) if objective.needs_reference and reference is not None else None
    logps = PairedLogps(
        chosen=sums[:half], rejected=sums[half:], chosen_tokens=counts[:half], rejected_tokens=counts[half:],
        ref_chosen=None if ref is None else ref[:half], ref_rejected=None if ref is None else ref[half:],
    )
    return objective.fn(logps, params)


def unpaired_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
                  objective: Objective, params) -> LossOutput:
    wants_exact = (objective.needs_reference and reference is not None and EXACT_KL in objective.extra_inputs
                   and getattr(params, "kl_estimator", None) == "exact")
    if wants_exact:  # the exact KL compares full next-token distributions: every position's logits
        logits = forward_logits(policy, batch)
        sums, counts = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    else:
        sums, counts = sequence_logps(policy, batch)
    logps = UnpairedLogps(logps=sums, tokens=counts, accepted=batch["accepted"])
    if objective.needs_reference and reference is not None:
        if wants_exact:
            ref_logits = reference.logits(batch)
            logps.exact_kl = exact_kl(ref_logits, logits, batch["completion_mask"])
            logps.ref_logps = completion_logps(ref_logits, batch["input_ids"], batch["completion_mask"])[0]
        else:
            logps.ref_logps = reference.logps(batch)
        if MISMATCHED_KL in objective.extra_inputs:
            with torch.no_grad():
                logps.kl_logps = sequence_logps(policy, batch, "kl_")[0]
            logps.ref_kl_logps = reference.logps(batch, "kl_")
    return objective.fn(logps, params)


def batch_loss(policy, reference, batch, objective: Objective, params) -> LossOutput:
    fn = pair_loss if objective.paired else unpaired_loss
    return fn(policy, reference, batch, objective, params)
