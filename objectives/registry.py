"""The objective registry: one small function per objective, found by name.

Each entry is the one place that knows what its objective needs: paired data or labelled
rows, a reference model (frozen or moving), extra inputs (some only for certain
hyperparameters, such as PMPO's exact KL or LD-DPO's tails), whether the reference's log-probs
may come from the study's shared cache, which hyperparameters it reads (some only when another
one has a given value, so the sweep samples only those), which metrics it reports (so the
sweep metric is checked up front) and what its loss is while the policy still equals its
reference (the step-0 check). A list of names is a mixture (TRL's `loss_type` list with
`loss_weights`). Everything else asks it rather than testing names.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from objectives.types import LossOutput, ObjectiveParams

ObjectiveFn = Callable[..., LossOutput]
Condition = Callable[[ObjectiveParams], bool]

# Extra inputs an objective may ask the engine for, beyond policy/reference log-probs.
MISMATCHED_KL = "mismatched_kl"  # KTO's batch KL baseline: prompt i with completion i-1 (cyclically, as TRL)
EXACT_KL = "exact_kl"  # PMPO with kl_estimator=exact: per-token categorical KL over the vocab
LENGTH_TAIL = "length_tail"  # LD-DPO: log-prob sums past each pair's shared length, policy and reference
WPO_WEIGHTS = "wpo_weights"  # WPO: the policy's log p(y_t) - log sum_v p(v)^2 summed per completion
# Inputs only a live reference model can give (not per-row numbers the cache holds).
_LIVE_ONLY = frozenset({MISMATCHED_KL, EXACT_KL, LENGTH_TAIL})

# Settings that switch a behaviour on, with their "on" test. Set on for an objective that does not
# read them, they would be ignored silently, so `problems` refuses that (as TRL refuses an
# f-divergence for a loss without one, or WPO weights for AOT's sorted pairs).
SWITCHES: dict[str, Callable[[Any], bool]] = {
    "f_divergence_type": lambda value: value != "reverse_kl",
    "use_weighting": bool,
    "ld_alpha": lambda value: value is not None,
    "gamma_beta_ratio": lambda value: value is not None,
    "sync_ref_model": bool,
    "ema_tau": lambda value: value is not None,
}


def _always(params: ObjectiveParams) -> bool:
    return True


@dataclass(frozen=True)
class When:
    """A hyperparameter read only while another one, `gate`, has a value passing `test`."""

    gate: str
    test: Callable[[Any], bool]

    def __call__(self, params: ObjectiveParams) -> bool:
        return bool(self.test(getattr(params, self.gate)))


@dataclass(frozen=True)
class MovingReference:
    """The reference becomes (1 - alpha) * reference + alpha * policy after every `every`-th
    optimizer step (TR-DPO's soft sync; alpha = 1 is its hard sync; every = 1 an EMA)."""

    alpha: float
    every: int
    why: str


@dataclass(frozen=True)
class Objective:
    name: str
    fn: ObjectiveFn
    paired: bool
    needs_reference: bool
    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    read_when: Mapping[str, When] = field(default_factory=dict)
    extra_inputs: Mapping[str, Condition] = field(default_factory=dict)
    zero_beta_ok: bool = False
    at_reference: Callable[[ObjectiveParams], float] | None = None
    check: Callable[[ObjectiveParams], list[tuple[str, str]]] | None = None
    summary: str = ""
    parts: tuple[tuple[Objective, float], ...] = ()  # a mixture's (objective, weight)s

    def reads(self, params: ObjectiveParams) -> frozenset[str]:
        """The hyperparameters this objective reads with these settings."""
        if self.parts:
            return frozenset().union(*(part.reads(params) for part, _ in self.parts))
        return frozenset(name for name in self.hyperparameters
                         if name not in self.read_when or self.read_when[name](params))

    def inputs(self, params: ObjectiveParams) -> frozenset[str]:
        """The extra inputs this objective needs with these hyperparameters."""
        if self.parts:
            return frozenset().union(*(part.inputs(params) for part, _ in self.parts))
        return frozenset(name for name, when in self.extra_inputs.items() if when(params))

    def needs_full_distributions(self, params: ObjectiveParams) -> bool:
        """Whether the reference's full next-token distributions (every position's logits) are read."""
        return EXACT_KL in self.inputs(params)

    def moving_reference(self, params: ObjectiveParams) -> MovingReference | None:
        """How the reference moves during training, or None for a frozen one."""
        reads = self.reads(params)
        if not self.needs_reference:
            return None
        if "ema_tau" in reads and params.ema_tau is not None:
            return MovingReference(params.ema_tau, 1, f"an EMA of the policy (ema_tau {params.ema_tau:g})")
        if "sync_ref_model" in reads and params.sync_ref_model:
            alpha, every = params.ref_model_mixup_alpha, params.ref_model_sync_steps
            kind = "hard" if alpha == 1.0 else f"soft (ref_model_mixup_alpha {alpha:g})"
            return MovingReference(alpha, every, f"TR-DPO {kind} sync every {every} steps")
        return None

    def reference_cache(self, params: ObjectiveParams) -> tuple[bool, str]:
        """(may the reference log-probs come from the study's per-row cache?, why). A frozen
        reference scores each row the same in every trial; a moving one does not, and full
        distributions or LD-DPO's tails are not the per-row sums the cache holds."""
        if not self.needs_reference:
            return False, f"{self.name} has no reference model"
        moving = self.moving_reference(params)
        if moving is not None:
            return False, f"{self.name}'s reference moves during training ({moving.why})"
        if self.needs_full_distributions(params):
            return False, f"{self.name} with these settings needs the live reference's full distributions"
        if LENGTH_TAIL in self.inputs(params):
            return False, f"{self.name} with ld_alpha needs the reference's log-probs past each pair's shared length"
        if MISMATCHED_KL in self.inputs(params):
            return True, "matched rows cached; the mismatched KL rows pair rows within a batch and stay live"
        return True, "every reference log-prob cached"

    def needs_live_reference(self, params: ObjectiveParams, cached: bool) -> bool:
        """Whether a reference model must be loaded, given whether the cache serves this run."""
        if not self.needs_reference:
            return False
        return (not cached or bool(self.inputs(params) & _LIVE_ONLY)
                or self.moving_reference(params) is not None)

    def loss_at_reference(self, params: ObjectiveParams) -> float | None:
        """The batch loss while the policy equals its reference (every log-ratio 0), or None
        where it depends on the batch (an SFT term, WPO's policy-dependent weights)."""
        if self.parts:
            values = [part.loss_at_reference(params) for part, _ in self.parts]
            if any(v is None for v in values):
                return None
            return sum(weight * v for (_, weight), v in zip(self.parts, values))
        if self.at_reference is None or WPO_WEIGHTS in self.inputs(params):
            return None
        return self.at_reference(params)

    def problems(self, params: ObjectiveParams) -> list[tuple[str, str]]:
        """(field, message) for each setting this objective cannot take; empty when it can.
        In a mixture every part checks the settings itself, so a switch must be read by all."""
        if self.parts:
            return [problem for part, _ in self.parts for problem in part.problems(params)]
        found = []
        if params.beta == 0.0 and not self.zero_beta_ok:
            found.append(("beta", f"must be > 0 for {self.name}"))
        reads = self.reads(params)
        for name, is_on in SWITCHES.items():
            if is_on(getattr(params, name)) and name not in reads:
                readers = [o.name for o in _REGISTRY.values() if name in o.hyperparameters]
                found.append((name, f"{self.name} does not read {name} (read by: {', '.join(readers)})"))
        return found + (self.check(params) if self.check else [])


_REGISTRY: dict[str, Objective] = {}


def register(
    name: str,
    *,
    paired: bool,
    needs_reference: bool,
    hyperparameters: tuple[str, ...],
    metrics: tuple[str, ...],
    read_when: Mapping[str, When] | None = None,
    extra_inputs: Mapping[str, Condition] | frozenset[str] = frozenset(),
    zero_beta_ok: bool = False,
    at_reference: Callable[[ObjectiveParams], float] | None = None,
    check: Callable[[ObjectiveParams], list[tuple[str, str]]] | None = None,
) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """`hyperparameters`: every one it may read; `read_when`: those read only under a condition
    on another. `extra_inputs`: names, or {name: condition on the hyperparameters} for inputs
    needed only with some settings. `zero_beta_ok`: beta weighs a KL term that may be switched
    off (for the others it is a temperature and must be > 0). `at_reference`: the loss while
    policy == reference. `check`: (field, message) for settings it cannot take."""
    conditions = dict(extra_inputs) if isinstance(extra_inputs, Mapping) else dict.fromkeys(extra_inputs, _always)
    read_when = dict(read_when or {})
    if set(read_when) - set(hyperparameters) or any(w.gate not in hyperparameters for w in read_when.values()):
        raise ValueError(f"objective {name!r}: read_when names a hyperparameter it does not list")

    def decorate(fn: ObjectiveFn) -> ObjectiveFn:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = Objective(
            name=name, fn=fn, paired=paired, needs_reference=needs_reference, hyperparameters=hyperparameters,
            metrics=("loss", *metrics), read_when=read_when, extra_inputs=conditions, zero_beta_ok=zero_beta_ok,
            at_reference=at_reference, check=check,
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


def gates() -> tuple[str, ...]:
    """Hyperparameters that decide whether others are read, in registration order: a search
    samples them first."""
    found: dict[str, None] = {}
    for objective in _REGISTRY.values():
        found.update(dict.fromkeys(when.gate for when in objective.read_when.values()))
    return tuple(found)


def resolve(name: str | Sequence[str], weights: Sequence[float] | None = None) -> Objective:
    """The objective a config names: one registered name, or a list of them combined with
    `weights` (TRL's loss_type list and loss_weights; default 1.0 each)."""
    names = (name,) if isinstance(name, str) else tuple(name)
    if len(names) == 1 and (weights is None or list(weights) == [1.0]):
        return get_objective(names[0])
    return _mixture(names, tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(names))


def objective_of(params: ObjectiveParams) -> Objective:
    """The objective an `objective` config section (or any params with name/loss_weights) names."""
    return resolve(params.name, params.loss_weights)


@functools.lru_cache(maxsize=64)
def _mixture(names: tuple[str, ...], weights: tuple[float, ...]) -> Objective:
    """sum_k w_k * mean_i loss_k(i), as TRL 1.16's DPOTrainer combines a list of loss types;
    the metrics are the first part's. Only paired objectives mix: they see the same batch."""
    if len(names) != len(weights):
        raise ValueError(f"{len(weights)} loss_weights for {len(names)} objectives")
    parts = tuple((get_objective(n), w) for n, w in zip(names, weights))
    unpaired = [part.name for part, _ in parts if not part.paired]
    if unpaired:
        raise ValueError(f"only paired objectives mix, not {', '.join(unpaired)} (labelled rows)")

    def mixed(logps, params) -> LossOutput:
        outputs = [part.fn(logps, params) for part, _ in parts]
        losses = sum(weight * out.losses for (_, weight), out in zip(parts, outputs))
        return LossOutput(losses, outputs[0].metrics)

    first = parts[0][0]
    label = "+".join(names) if weights == (1.0,) * len(names) else "+".join(f"{w:g}*{n}" for n, w in zip(names, weights))
    return Objective(
        name=label, fn=mixed, paired=True, needs_reference=any(p.needs_reference for p, _ in parts),
        hyperparameters=tuple(dict.fromkeys(h for p, _ in parts for h in p.hyperparameters)), metrics=first.metrics,
        zero_beta_ok=all(p.zero_beta_ok for p, _ in parts), summary=f"mixture of {', '.join(names)}", parts=parts,
    )
