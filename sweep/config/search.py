"""The `sweep` section: what is searched, how, and what decides (W&B sweep vocabulary)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sweep.config.fields import MAX_BATCH, MAX_COUNT, Seed, Strict


class MetricConfig(Strict):
    name: str = Field("eval/rewards/accuracies", description="Metric the sweep optimises.")
    goal: Literal["maximize", "minimize"] = Field("maximize", description="Direction of improvement.")

    @property
    def mode(self) -> str:
        return "max" if self.goal == "maximize" else "min"


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

    @model_validator(mode="after")
    def _shape(self) -> ParameterSpec:
        kind = self.kind
        if kind in ("categorical",) and not self.values:
            raise ValueError("`values` must be a non-empty list")
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
