"""Averaging metrics over micro-batches, logging windows and DDP workers."""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor


class MetricAccumulator:
    """Weighted means of scalar metrics; NaN values (e.g. a metric of an empty set) are
    skipped rather than poisoning the mean."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, Tensor | float], weight: float) -> None:
        for name, value in metrics.items():
            value = float(value.detach().float().item() if isinstance(value, Tensor) else value)
            if math.isnan(value):
                weight_here = 0.0  # keep the name so every DDP rank reduces the same vector
                value = 0.0
            else:
                weight_here = weight
            self.sums[name] += value * weight_here
            self.weights[name] += weight_here

    def reduce(self, distributed: bool = False) -> dict[str, float]:
        names = sorted(self.sums)
        sums = torch.tensor([self.sums[n] for n in names] + [self.weights[n] for n in names], dtype=torch.float64)
        if distributed and names and torch.distributed.is_available() and torch.distributed.is_initialized():
            # all_reduce needs every rank to hold the same names; ranks see the same objective, so they do.
            device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            sums = sums.to(device)
            torch.distributed.all_reduce(sums)
            sums = sums.cpu()
        n = len(names)
        return {name: (sums[i] / sums[n + i]).item() for i, name in enumerate(names) if sums[n + i] > 0}
