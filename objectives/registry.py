"""The objective registry: one small function per objective, found by name.

Each entry declares what the worker loop must compute for it (a reference model, paired
data, extra log-prob inputs), which config hyperparameters it reads (so the sweep samples
only those), and which metrics it reports (so the sweep metric can be validated up front).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from objectives.types import LossOutput

ObjectiveFn = Callable[..., LossOutput]

# Extra inputs an objective may ask the worker for, beyond policy/reference log-probs.
MISMATCHED_KL = "mismatched_kl"  # KTO's batch KL baseline: prompt i with completion i-1 (cyclically, as TRL)
EXACT_KL = "exact_kl"  # PMPO with kl_estimator=exact: per-token categorical KL over the vocab


@dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn
    paired: bool
    needs_reference: bool
    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    extra_inputs: frozenset[str] = frozenset()
    summary: str = ""


_REGISTRY: dict[str, Objective] = {}


def register(
    name: str,
    *,
    paired: bool,
    needs_reference: bool,
    hyperparameters: tuple[str, ...],
    metrics: tuple[str, ...],
    extra_inputs: frozenset[str] = frozenset(),
) -> Callable[[ObjectiveFn], ObjectiveFn]:
    def decorate(fn: ObjectiveFn) -> ObjectiveFn:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = Objective(
            name=name,
            fn=fn,
            paired=paired,
            needs_reference=needs_reference,
            hyperparameters=hyperparameters,
            metrics=("loss", *metrics),
            extra_inputs=frozenset(extra_inputs),
            summary=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        return fn

    return decorate


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from objectives import pairwise, unpaired  # noqa: F401


def get_objective(name: str) -> Objective:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def objective_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)
