"""One loss evaluation on a collated batch: forward passes, then the objective.

Shared by the worker loop, evaluation, the reference-cache pass and the benchmarks, so the
numbers they report come from the same code.
"""
from __future__ import annotations

import contextlib
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
        logits = self.logits(batch, prefix)
        return completion_logps(logits, batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"])[0]


def pair_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
              objective: Objective, params) -> LossOutput:
    """batch rows: B chosen then B rejected (see objectives.batching.PairCollator)."""
    logits = forward_logits(policy, batch)
    sums, counts = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    half = sums.shape[0] // 2
    ref = reference.logps(batch) if objective.needs_reference and reference is not None else None
    logps = PairedLogps(
        chosen=sums[:half], rejected=sums[half:], chosen_tokens=counts[:half], rejected_tokens=counts[half:],
        ref_chosen=None if ref is None else ref[:half], ref_rejected=None if ref is None else ref[half:],
    )
    return objective.fn(logps, params)


def unpaired_loss(policy: nn.Module, reference: Reference | None, batch: dict[str, Tensor],
                  objective: Objective, params) -> LossOutput:
    logits = forward_logits(policy, batch)
    sums, counts = completion_logps(logits, batch["input_ids"], batch["completion_mask"])
    logps = UnpairedLogps(logps=sums, tokens=counts, accepted=batch["accepted"])
    if objective.needs_reference and reference is not None:
        wants_exact = EXACT_KL in objective.extra_inputs and getattr(params, "kl_estimator", None) == "exact"
        if wants_exact:
            ref_logits = reference.logits(batch)
            logps.exact_kl = exact_kl(ref_logits, logits, batch["completion_mask"])
            logps.ref_logps = completion_logps(ref_logits, batch["input_ids"], batch["completion_mask"])[0]
        else:
            logps.ref_logps = reference.logps(batch)
        if MISMATCHED_KL in objective.extra_inputs:
            with torch.no_grad():
                kl_logits = forward_logits(policy, batch, "kl_")
            logps.kl_logps = completion_logps(kl_logits, batch["kl_input_ids"], batch["kl_completion_mask"])[0]
            logps.ref_kl_logps = reference.logps(batch, "kl_")
    return objective.fn(logps, params)


def batch_loss(policy, reference, batch, objective: Objective, params) -> LossOutput:
    fn = pair_loss if objective.paired else unpaired_loss
    return fn(policy, reference, batch, objective, params)
