"""The sweep block as an Optuna define-by-run space: conditional objective parameters, the
rounding of stepped distributions, grids."""
from __future__ import annotations

import optuna
import pytest

from sweep.config.schema import SweepConfig
from sweep.study.search_space import PARAMS_ATTR, DefineByRun, grid, sampler_for, total_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(sweep: SweepConfig, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """(what Optuna recorded, the trial config Tune builds: the returned dict over the suggested values) of n asks."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = DefineByRun(sweep)
    out = []
    for _ in range(n):
        trial = study.ask()
        returned = space(trial)
        config = {**trial.params, **returned}
        # The Optuna trial keeps the values as used (rounded), beside its raw suggestions.
        assert trial.user_attrs[PARAMS_ATTR] == {k: v for k, v in config.items() if k in trial.params}
        out.append((dict(trial.params), config))
        study.tell(trial, 0.0)
    return out


def test_each_objective_samples_only_the_parameters_it_reads():
    sweep = SweepConfig(parameters={
        "objective.name": {"values": ["dpo", "kto", "simpo"]},
        "objective.label_smoothing": {"values": [0.0, 0.1]},  # dpo, simpo
        "objective.desirable_weight": {"distribution": "uniform", "min": 0.5, "max": 2.0},  # kto
        "objective.gamma": {"values": [0.5, 1.0]},  # simpo
        "train.learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-3},
    })
    reads = {"dpo": {"objective.label_smoothing"}, "kto": {"objective.desirable_weight"},
             "simpo": {"objective.label_smoothing", "objective.gamma"}}
    seen = set()
    for recorded, config in sample(sweep, 40):
        name = config["objective.name"]
        seen.add(name)
        assert set(recorded) == set(config) == {"objective.name", "train.learning_rate"} | reads[name], config
    assert seen == set(reads)


def test_stepped_distributions_round_into_their_range_and_constants_pass_through():
    sweep = SweepConfig(parameters={
        "train.learning_rate": {"distribution": "q_log_uniform_values", "min": 1e-5, "max": 1e-3, "q": 1e-5},
        "objective.beta": {"distribution": "q_uniform", "min": 0.05, "max": 0.5, "q": 0.05},
        "train.per_device_batch_size": {"distribution": "int_uniform", "min": 2, "max": 9},
        "train.warmup_steps": {"value": 7},
    })
    for recorded, config in sample(sweep, 60, seed=3):
        lr, beta, batch = config["train.learning_rate"], config["objective.beta"], config["train.per_device_batch_size"]
        assert 1e-5 <= lr <= 1e-3 and abs(lr / 1e-5 - round(lr / 1e-5)) < 1e-6
        assert 0.05 <= beta <= 0.5 and abs(beta / 0.05 - round(beta / 0.05)) < 1e-6
        assert isinstance(batch, int) and 2 <= batch <= 9
        assert config["train.warmup_steps"] == 7 and "train.warmup_steps" not in recorded


def test_grid_takes_values_only_and_caps_trials_at_its_size():
    sweep = SweepConfig(method="grid", num_trials=100, parameters={
        "objective.beta": {"values": [0.1, 0.2]}, "train.learning_rate": {"values": [1e-4, 1e-5, 1e-6]}})
    assert grid(sweep) == {"objective.beta": [0.1, 0.2], "train.learning_rate": [1e-4, 1e-5, 1e-6]}
    assert total_trials(sweep) == 6
    assert total_trials(sweep.model_copy(update={"num_trials": 4})) == 4
    assert isinstance(sampler_for(sweep), optuna.samplers.GridSampler)
    bad = SweepConfig(method="grid", parameters={"train.learning_rate": {"distribution": "uniform", "min": 0.1, "max": 1}})
    with pytest.raises(ValueError, match="sweep.parameters.train.learning_rate"):
        grid(bad)
