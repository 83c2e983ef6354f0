"""The `sweep.parameters` block (W&B sweep vocabulary) as an Optuna define-by-run space.

Define-by-run gives conditional parameters: a hyperparameter `objective.X` is sampled only when
the trial's objective reads X with the values drawn so far (its registry entry says which, some
only under a condition on another, e.g. `f_alpha_divergence_coef` only with an alpha-divergence),
and a categorical parameter with nested `parameters` adds the specs of the value it drew (each
objective's own ranges under `objective.name`). Keys are drawn objective name first, then the
hyperparameters others depend on, then the rest (`sweep.config.search.sample_rank`).

A nested parameter is told to Optuna under a branch-qualified name,
`objective.name=simpo | objective.beta`: one name may have a log range in one branch and a linear
one in another, which Optuna refuses for a single name, and TPE learns each branch's density on
its own. The trial's config gets the plain dotted key (`trial_values`).
"""
from __future__ import annotations

import math
from typing import Any

import optuna

from objectives.registry import objective_of
from sweep.config.schema import ObjectiveConfig, ParameterSpec, SweepConfig
from sweep.config.search import OBJECTIVE_KEY, sample_rank, value_label

PARAMS_ATTR = "prefsweep.params"  # Optuna user attribute: the sampled values as the trial used them
# In Optuna parameter names only: "<parent>=<label> | <key>". No config key holds it, and it is not
# Tune's "/", which OptunaSearch.suggest would turn into nested config dicts.
BRANCH_MARK = " | "


def constants(sweep: SweepConfig) -> dict[str, Any]:
    return {k: s.value for k, s in sweep.parameters.items() if s.kind == "constant"}


def searched(sweep: SweepConfig) -> dict[str, ParameterSpec]:
    """Swept (non-constant) top-level parameters, in sampling order."""
    items = {k: s for k, s in sweep.parameters.items() if s.kind != "constant"}
    return dict(sorted(items.items(), key=lambda kv: sample_rank(kv[0])))


def applies(key: str, values: dict[str, Any], base: ObjectiveConfig | None = None) -> bool:
    """An `objective.X` parameter applies only if the trial's objective reads X, given the base
    objective section and the values drawn so far."""
    if not key.startswith("objective.") or key in (OBJECTIVE_KEY, "objective.loss_weights"):
        return True
    base = base or ObjectiveConfig()
    drawn = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("objective.")}
    params = base.model_copy(update=drawn)  # unvalidated: only read, the trial validates its config
    return key.split(".", 1)[1] in objective_of(params).reads(params)


def trial_values(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config without Optuna's branch-qualified names (Tune merges those in)."""
    return {k: v for k, v in config.items() if BRANCH_MARK not in k}


def optuna_choices(spec: ParameterSpec) -> dict[Any, Any]:
    """{what Optuna sees: the value used}. Optuna's choices are plain scalars, so a list value
    (a mixture of objectives, loss weights) goes by its label."""
    return {value_label(v) if isinstance(v, (list, tuple)) else v: v for v in spec.values or []}


def suggest(trial: optuna.Trial, key: str, spec: ParameterSpec) -> Any:
    kind = spec.kind
    if kind == "categorical":
        choices = optuna_choices(spec)
        return choices[trial.suggest_categorical(key, list(choices))]
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
    if kind == "constant":
        return spec.value
    raise ValueError(f"sweep.parameters.{key}: unsupported distribution {kind}")


class DefineByRun:
    """Optuna define-by-run space. A class, not a closure: Tune pickles the searcher into
    its experiment checkpoint, which `prefsweep resume` restores."""

    def __init__(self, sweep: SweepConfig, objective: ObjectiveConfig | None = None):
        self.space = searched(sweep)
        self.fixed = constants(sweep)
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        # (key, spec, Optuna name); nested specs join when their branch is drawn and replace
        # the top-level spec of their key.
        pending = [(key, spec, key) for key, spec in self.space.items()]
        while pending:
            key, spec, name = pending.pop(0)
            if not applies(key, {**self.fixed, **values}, self.objective):
                continue
            values[key] = suggest(trial, name, spec)
            nested = (spec.parameters or {}).get(value_label(values[key]), {})
            if nested:
                prefix = f"{name}={value_label(values[key])}{BRANCH_MARK}"
                pending = [item for item in pending if item[0] not in nested]
                pending += [(k, s, prefix + k) for k, s in nested.items()]
                pending.sort(key=lambda item: sample_rank(item[0]))  # stable: nested after top level of a rank
        # OptunaSearch merges the returned dict over the raw suggested values: the rounded
        # stepped values (q_log_uniform_values), list values and the constants reach the trial
        # config. The values as used are kept on the Optuna trial too, which records the raw ones.
        trial.set_user_attr(PARAMS_ATTR, values)
        return {**self.fixed, **values}


def grid(sweep: SweepConfig) -> dict[str, list[Any]]:
    """Optuna GridSampler search space; grid sweeps take categorical values only."""
    space = {}
    for key, spec in searched(sweep).items():
        if spec.kind != "categorical":
            raise ValueError(f"sweep.parameters.{key}: method grid needs `values`, got distribution {spec.kind}")
        space[key] = list(optuna_choices(spec))
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
