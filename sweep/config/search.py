"""The `sweep` section: what is searched, how, and what decides (W&B sweep vocabulary)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from objectives.registry import gates
from sweep.config.fields import MAX_BATCH, MAX_COUNT, Seed, Strict

OBJECTIVE_KEY = "objective.name"


class MetricConfig(Strict):
    name: str = Field("eval/rewards/accuracies", description="Metric the sweep optimises.")
    goal: Literal["maximize", "minimize"] = Field("maximize", description="Direction of improvement.")

    @property
    def mode(self) -> str:
        return "max" if self.goal == "maximize" else "min"


class Bound(Strict):
    max: float | None = Field(None, description="The metric must be at most this.")
    min: float | None = Field(None, description="The metric must be at least this.")

    @model_validator(mode="after")
    def _some_bound(self) -> Bound:
        if self.max is None and self.min is None:
            raise ValueError("give `max`, `min` or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def admits(self, value: float | None) -> bool:
        return value is not None and (self.max is None or value <= self.max) and (self.min is None or value >= self.min)


class ChampionConfig(Strict):
    by: str | None = Field(None, min_length=1, description="The metric that ranks the trials that meet every "
                           "constraint; null: the sweep's metric.")
    goal: Literal["maximize", "minimize"] | None = Field(
        None, description="Direction of `by`; default: its goal in `sweep.metrics`/`sweep.metric`, else maximize.")
    constraints: dict[str, Bound] = Field(
        default_factory=dict, max_length=16,
        description="METRIC: {max: X} and/or {min: X}; a trial missing the metric does not qualify.")


class EarlyTerminate(Strict):
    type: Literal["asha"] = Field("asha", description="Early-stopping scheduler (Tune's ASHA).")
    grace_period: int = Field(1, ge=1, le=MAX_COUNT, description="Evaluations a trial always gets before it may be stopped.")
    reduction_factor: float = Field(2, gt=1, le=MAX_BATCH, description="ASHA keeps 1/reduction_factor of trials per rung.")


Distribution = Literal[
    "constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform_values",
    "q_log_uniform_values",
]


class ParameterSpec(Strict):
    """One swept parameter, in W&B sweep vocabulary."""

    values: list[Any] | None = Field(None, description="Categorical choices.")
    value: Any | None = Field(None, description="A constant.")
    distribution: Distribution | None = Field(
        None, description="A distribution between `min` and `max`; `log_uniform_values` samples on a log scale."
    )
    min: float | None = Field(None, description="Lower bound of the distribution.")
    max: float | None = Field(None, description="Upper bound of the distribution.")
    q: float | None = Field(None, gt=0, description="Step for q_ distributions.")
    parameters: dict[str, dict[str, ParameterSpec]] | None = Field(
        None,
        description="With `values`: parameters sampled only in trials that draw a given value, keyed by that "
        "value (a list value by its items joined with '+', e.g. `sigmoid+sft`); in those trials they replace "
        "the top-level parameter of the same key. Under `objective.name` this gives each objective its own "
        "ranges, e.g. {dpo: {objective.beta: {min: 0.01, max: 0.5, distribution: log_uniform_values}}}.",
    )

    @field_validator("parameters", mode="before")
    @classmethod
    def _label_keys(cls, parameters: Any) -> Any:
        # YAML reads `true:` or `0.1:` as a bool or a number; a branch is named by its value's label.
        if isinstance(parameters, dict):
            return {value_label(key): specs for key, specs in parameters.items()}
        return parameters

    @model_validator(mode="after")
    def _shape(self) -> ParameterSpec:
        kind = self.kind
        if kind in ("categorical",) and not self.values:
            raise ValueError("`values` must be a non-empty list")
        if self.parameters is not None:
            if kind != "categorical":
                raise ValueError("nested `parameters` need `values` to branch on")
            labels = [value_label(v) for v in self.values or []]
            strangers = [key for key in self.parameters if key not in labels]
            if strangers:
                raise ValueError(f"parameters: {', '.join(map(repr, strangers))} is not one of the values "
                                 f"({', '.join(labels)})")
        if kind in ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values"):
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {kind} needs `min` and `max`")
            if not self.min < self.max:
                raise ValueError(f"min ({self.min}) must be < max ({self.max})")
            if "log" in kind and self.min <= 0:
                raise ValueError(f"distribution {kind} needs min > 0")
            if kind.startswith("q_") and self.q is None:
                raise ValueError(f"distribution {kind} needs `q`")
        if kind == "constant" and self.value is None:
            raise ValueError("give `values`, `value` or `distribution`")
        return self

    @property
    def kind(self) -> str:
        if self.distribution is not None:
            return self.distribution
        if self.values is not None:
            return "categorical"
        return "constant"

    def edge_values(self) -> list[Any]:
        """Values that must each yield a valid config (checked before any trial starts)."""
        kind = self.kind
        if kind == "categorical":
            return list(self.values or [])
        if kind == "constant":
            return [self.value]
        if kind == "int_uniform":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]


def value_label(value: Any) -> str:
    """How a categorical value names its branch of nested parameters (and its Optuna choice):
    a list joins its items with '+', booleans are YAML's true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "+".join(value_label(item) for item in value)
    return str(value)


def sample_rank(key: str) -> int:
    """Order in which swept keys are sampled: `objective.name` first, then the hyperparameters
    that decide whether others are read (the registry's gates), then the rest."""
    if key == OBJECTIVE_KEY:
        return 0
    gated = [f"objective.{gate}" for gate in gates()]
    return 1 + gated.index(key) if key in gated else 1 + len(gated)


@dataclass(frozen=True)
class Swept:
    """One parameter spec of a sweep, nested ones included. path: its dotted field path (for
    messages); key: the config key it sets; under: {key: value} of the values it is nested under;
    branch: the values a trial in its branch has (`under` plus the first edge value of each
    nested sibling)."""

    path: str
    key: str
    spec: ParameterSpec
    under: dict[str, Any]
    branch: dict[str, Any]

    def describe(self) -> str:
        return self.key + "".join(f" (if {k}={value_label(v)})" for k, v in self.under.items())


def walk(parameters: dict[str, ParameterSpec], prefix: str = "sweep.parameters") -> Iterator[Swept]:
    """Every parameter spec of a sweep, nested ones after the one they branch from."""
    yield from _walk(parameters, prefix, {}, {})


def _walk(parameters, prefix, under, branch):
    for key, spec in parameters.items():
        path = f"{prefix}.{key}"
        yield Swept(path, key, spec, under, branch)
        for label in spec.parameters or {}:
            value = next(v for v in spec.values or [] if value_label(v) == label)
            yield from _walk(spec.parameters[label], f"{path}.parameters.{label}", {**under, key: value},
                             {**branch, key: value, **branch_defaults(spec, value)})


def branch_defaults(spec: ParameterSpec, value: Any) -> dict[str, Any]:
    """The first edge value of each parameter nested under `value` of `spec`."""
    nested = (spec.parameters or {}).get(value_label(value), {})
    return {key: inner.edge_values()[0] for key, inner in nested.items()}


def values_of(parameters: dict[str, ParameterSpec], key: str) -> list[Any] | None:
    """Every value `key` may take in a sweep (at top level or nested), None when it is not swept."""
    found = [value for swept in walk(parameters) if swept.key == key for value in swept.spec.edge_values()]
    return found or None


def _default_parameters() -> dict[str, ParameterSpec]:
    return {
        "objective.beta": ParameterSpec(values=[0.01, 0.1, 0.2, 0.5]),
        "train.learning_rate": ParameterSpec(distribution="log_uniform_values", min=1.0e-6, max=1.0e-3),
        "train.per_device_batch_size": ParameterSpec(values=[2, 4, 8]),
        "train.gradient_accumulation_steps": ParameterSpec(values=[1, 2, 4]),
    }


class SweepConfig(Strict):
    method: Literal["bayes", "random", "grid"] = Field(
        "bayes", description="`bayes`: Optuna TPE; `random`: Optuna random sampler; `grid`: every combination."
    )
    metric: MetricConfig = Field(default_factory=MetricConfig)
    metrics: list[MetricConfig] | None = Field(
        None, min_length=1, max_length=8,
        description="Several metrics at once: Optuna's multi-objective search (Pareto front); ASHA and the "
        "trial order use the first, which `metric` then is.")
    champion: ChampionConfig | None = Field(
        None, description="Which trial is registered as `champion`: the best by `by` among those meeting "
        "`constraints`; null: the best by `metric`.")
    num_trials: int = Field(8, ge=1, le=MAX_BATCH,
                            description="Trials to run (for grid: at most this many of its combinations).")
    max_concurrent_trials: int = Field(1, ge=1, le=MAX_BATCH, description="Trials running at once.")
    early_terminate: EarlyTerminate | None = Field(
        default_factory=EarlyTerminate, description="ASHA early stopping; null disables it."
    )
    parameters: dict[str, ParameterSpec] = Field(
        default_factory=_default_parameters,
        description="Swept parameters keyed by dotted config path, e.g. `train.learning_rate`.",
    )
    seed: Seed = Field(0, description="Seed of the search algorithm: same seed, same proposals.")
    max_retries: int = Field(
        2, ge=0, le=100, description="Times a trial whose worker died restarts from its last checkpoint."
    )

    @model_validator(mode="after")
    def _metrics(self) -> SweepConfig:
        if self.metrics is None:
            return self
        names = [m.name for m in self.metrics]
        if len(set(names)) < len(names):
            raise ValueError(f"metrics: {names} names a metric twice")
        if "metric" in self.model_fields_set and self.metric != self.metrics[0]:
            raise ValueError(f"metric {self.metric.name!r} is not the first of `metrics` ({names[0]!r}): "
                             "drop `metric`, or put it first")
        # The first metric is what ASHA, Tune and the trial order read: `metric` names it.
        object.__setattr__(self, "metric", self.metrics[0])
        return self

    @property
    def objectives(self) -> list[MetricConfig]:
        """The metrics Optuna optimises: `metrics`, or `[metric]`."""
        return list(self.metrics) if self.metrics else [self.metric]

    def named_metrics(self) -> list[tuple[str, str]]:
        """(field, metric) of every metric this section names."""
        named = [("sweep.metric.name", self.metric.name)] if not self.metrics else \
            [(f"sweep.metrics.{i}.name", m.name) for i, m in enumerate(self.metrics)]
        if self.champion is not None:
            if self.champion.by:
                named.append(("sweep.champion.by", self.champion.by))
            named += [(f"sweep.champion.constraints.{k}", k) for k in self.champion.constraints]
        return named

    def goal_of(self, name: str) -> str | None:
        return next((m.goal for m in self.objectives if m.name == name), None)
