"""The `sweep.parameters` block (W&B sweep vocabulary) as an Optuna define-by-run space.

Define-by-run gives conditional parameters: when `objective.name` is itself swept, only the
sampled objective's own hyperparameters (as its registry entry declares) are sampled.
"""
from __future__ import annotations

import math
from typing import Any

import optuna

from objectives.registry import get_objective
from sweep.config.schema import ParameterSpec, SweepConfig

OBJECTIVE_KEY = "objective.name"
PARAMS_ATTR = "prefsweep.params"  # Optuna user attribute: the sampled values as the trial used them


def constants(sweep: SweepConfig) -> dict[str, Any]:
    return {k: s.value for k, s in sweep.parameters.items() if s.kind == "constant"}


def searched(sweep: SweepConfig) -> dict[str, ParameterSpec]:
    """Swept (non-constant) parameters, `objective.name` first so others can depend on it."""
    items = {k: s for k, s in sweep.parameters.items() if s.kind != "constant"}
    return dict(sorted(items.items(), key=lambda kv: kv[0] != OBJECTIVE_KEY))


def applies(key: str, values: dict[str, Any]) -> bool:
    """An `objective.X` parameter applies only if the sampled objective reads X."""
    if not key.startswith("objective.") or key == OBJECTIVE_KEY or OBJECTIVE_KEY not in values:
        return True
    return key.split(".", 1)[1] in get_objective(values[OBJECTIVE_KEY]).hyperparameters


def suggest(trial: optuna.Trial, key: str, spec: ParameterSpec) -> Any:
    kind = spec.kind
    if kind == "categorical":
        return trial.suggest_categorical(key, spec.values)
    if kind == "int_uniform":
        return trial.suggest_int(key, int(spec.min), int(spec.max))
    if kind == "uniform":
        return trial.suggest_float(key, spec.min, spec.max)
    if kind == "q_uniform":
        return trial.suggest_float(key, spec.min, spec.max, step=spec.q)
    if kind == "log_uniform_values":
        return trial.suggest_float(key, spec.min, spec.max, log=True)
    if kind == "q_log_uniform_values":
        # Optuna has no stepped log distribution: sample on the log scale, round to the step.
        value = trial.suggest_float(key, spec.min, spec.max, log=True)
        return min(spec.max, max(spec.min, round(value / spec.q) * spec.q))
    raise ValueError(f"sweep.parameters.{key}: unsupported distribution {kind}")


class DefineByRun:
    """Optuna define-by-run space. A class, not a closure: Tune pickles the searcher into
    its experiment checkpoint, which `prefsweep resume` restores."""

    def __init__(self, sweep: SweepConfig):
        self.space = searched(sweep)
        self.fixed = constants(sweep)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, spec in self.space.items():
            if applies(key, values):
                values[key] = suggest(trial, key, spec)
        # OptunaSearch merges the returned dict over the raw suggested values: the rounded
        # stepped values (q_log_uniform_values) and the constants reach the trial config. The
        # values as used are kept on the Optuna trial too, which records the raw ones.
        trial.set_user_attr(PARAMS_ATTR, values)
        return {**self.fixed, **values}


def grid(sweep: SweepConfig) -> dict[str, list[Any]]:
    """Optuna GridSampler search space; grid sweeps take categorical values only."""
    space = {}
    for key, spec in searched(sweep).items():
        if spec.kind != "categorical":
            raise ValueError(f"sweep.parameters.{key}: method grid needs `values`, got distribution {spec.kind}")
        space[key] = list(spec.values)
    return space


def sampler_for(sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    if sweep.method == "bayes":
        return optuna.samplers.TPESampler(seed=sweep.seed)
    if sweep.method == "random":
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    return optuna.samplers.GridSampler(grid(sweep), seed=sweep.seed)


def total_trials(sweep: SweepConfig) -> int:
    if sweep.method == "grid":
        return min(sweep.num_trials, math.prod(len(v) for v in grid(sweep).values()) or 1)
    return sweep.num_trials
