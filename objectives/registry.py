"""The objective registry: one small function per objective, found by name.

Each entry is the one place that knows what its objective needs: paired data or labelled
rows, a reference model, extra inputs (some only for certain hyperparameters, such as PMPO's
exact KL), whether the reference's log-probs may come from the study's shared cache, which
hyperparameters it reads (so the sweep samples only those) and which metrics it reports (so
the sweep metric is checked up front). Everything else asks it rather than testing names.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from objectives.types import LossOutput, ObjectiveParams

ObjectiveFn = Callable[..., LossOutput]
Condition = Callable[[ObjectiveParams], bool]

# Extra inputs an objective may ask the engine for, beyond policy/reference log-probs.
MISMATCHED_KL = "mismatched_kl"  # KTO's batch KL baseline: prompt i with completion i-1 (cyclically, as TRL)
EXACT_KL = "exact_kl"  # PMPO with kl_estimator=exact: per-token categorical KL over the vocab


def _always(params: ObjectiveParams) -> bool:
    return True


@dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn
    paired: bool
    needs_reference: bool
    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    extra_inputs: Mapping[str, Condition] = field(default_factory=dict)
    zero_beta_ok: bool = False
    summary: str = ""

    def inputs(self, params: ObjectiveParams) -> frozenset[str]:
        """The extra inputs this objective needs with these hyperparameters."""
        return frozenset(name for name, when in self.extra_inputs.items() if when(params))

    def needs_full_distributions(self, params: ObjectiveParams) -> bool:
        """Whether the reference's full next-token distributions (every position's logits) are read."""
        return EXACT_KL in self.inputs(params)

    def reference_cache(self, params: ObjectiveParams) -> tuple[bool, str]:
        """(may the reference log-probs come from the study's per-row cache?, why). A frozen
        reference scores each row the same in every trial; full distributions are not per-row
        numbers, so they stay live."""
        if not self.needs_reference:
            return False, f"{self.name} has no reference model"
        if self.needs_full_distributions(params):
            return False, f"{self.name} with these settings needs the live reference's full distributions"
        if MISMATCHED_KL in self.inputs(params):
            return True, "matched rows cached; the mismatched KL rows pair rows within a batch and stay live"
        return True, "every reference log-prob cached"

    def needs_live_reference(self, params: ObjectiveParams, cached: bool) -> bool:
        """Whether a reference model must be loaded, given whether the cache serves this run."""
        if not self.needs_reference:
            return False
        return not cached or MISMATCHED_KL in self.inputs(params) or self.needs_full_distributions(params)


_REGISTRY: dict[str, Objective] = {}


def register(
    name: str,
    *,
    paired: bool,
    needs_reference: bool,
    hyperparameters: tuple[str, ...],
    metrics: tuple[str, ...],
    extra_inputs: Mapping[str, Condition] | frozenset[str] = frozenset(),
    zero_beta_ok: bool = False,
) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """`extra_inputs`: names, or {name: condition on the hyperparameters} for inputs needed
    only with some settings. `zero_beta_ok`: beta weighs a KL term that may be switched off
    (for the others it is a temperature and must be > 0)."""
    conditions = dict(extra_inputs) if isinstance(extra_inputs, Mapping) else dict.fromkeys(extra_inputs, _always)

    def decorate(fn: ObjectiveFn) -> ObjectiveFn:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = Objective(
            name=name, fn=fn, paired=paired, needs_reference=needs_reference, hyperparameters=hyperparameters,
            metrics=("loss", *metrics), extra_inputs=conditions, zero_beta_ok=zero_beta_ok,
            summary=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        return fn

    return decorate


def get_objective(name: str) -> Objective:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def objective_names() -> list[str]:
    return sorted(_REGISTRY)
