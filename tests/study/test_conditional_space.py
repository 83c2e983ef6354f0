"""Ranges that fit each objective: nested parameters under an objective's value (W&B-style YAML),
hyperparameters read only under a condition on another (f-divergence alpha, TR-DPO sync), mixtures
as categorical values, and the validation that refuses bad nested specs by their dotted key
before anything is written."""
from __future__ import annotations

import math

import optuna
import pytest
import yaml

from sweep.cli.main import main
from sweep.config.loading import ConfigError, load_config
from sweep.config.schema import ObjectiveConfig, SweepConfig
from sweep.study.search_space import PARAMS_ATTR, DefineByRun, trial_values

optuna.logging.set_verbosity(optuna.logging.WARNING)

PER_OBJECTIVE = yaml.safe_load("""
objective.name:
  values: [dpo, sigmoid_norm, simpo, apo_zero]
  parameters:
    dpo:
      objective.beta: {distribution: log_uniform_values, min: 0.01, max: 0.5}
      objective.label_smoothing: {values: [0.0, 0.1]}
    sigmoid_norm:
      objective.beta: {distribution: uniform, min: 1.0, max: 10.0}
    simpo:
      objective.beta: {distribution: uniform, min: 1.0, max: 10.0}
      objective.gamma_beta_ratio: {distribution: uniform, min: 0.1, max: 0.8}
objective.beta: {values: [0.05, 0.1]}
train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}
""")


def sample(sweep: SweepConfig, n: int, *, objective: ObjectiveConfig | None = None, sampler=None, storage=None):
    """(what Optuna recorded, the trial's config values as Tune hands them over) of n asks."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0), storage=storage)
    space = DefineByRun(sweep, objective)
    out = []
    for number in range(n):
        trial = study.ask()
        config = trial_values({**trial.params, **space(trial)})
        assert trial.user_attrs[PARAMS_ATTR] == {k: v for k, v in config.items() if k not in space.fixed}
        out.append((dict(trial.params), config))
        study.tell(trial, float(number % 3))
    return out


def test_each_objective_draws_its_own_ranges_and_only_what_it_reads():
    sweep = SweepConfig(parameters=PER_OBJECTIVE)
    seen = set()
    for recorded, config in sample(sweep, 80):
        name, beta = config["objective.name"], config["objective.beta"]
        seen.add(name)
        expected = {"objective.name", "objective.beta", "train.learning_rate"}
        if name == "dpo":
            assert 0.01 <= beta <= 0.5 and "objective.name=dpo | objective.beta" in recorded
            expected.add("objective.label_smoothing")
        elif name in ("sigmoid_norm", "simpo"):
            assert 1.0 <= beta <= 10.0 and f"objective.name={name} | objective.beta" in recorded
            if name == "simpo":
                assert 0.1 <= config["objective.gamma_beta_ratio"] <= 0.8
                expected.add("objective.gamma_beta_ratio")  # and not gamma: the ratio replaces it
        else:  # apo_zero: no branch of its own, the top-level values
            assert beta in (0.05, 0.1) and "objective.beta" in recorded
        assert set(config) == expected, config
        assert not any("|" in key for key in config)  # branch names stay Optuna's
    assert seen == {"dpo", "sigmoid_norm", "simpo", "apo_zero"}


def test_tpe_learns_branches_with_log_and_linear_ranges_of_one_key(tmp_path):
    # One Optuna name with a log range in one trial and a linear one in another is refused by its
    # storage; branch-qualified names keep them apart, across persisted trials too.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    results = sample(SweepConfig(parameters=PER_OBJECTIVE), 30, sampler=optuna.samplers.TPESampler(seed=1,
                     n_startup_trials=8), storage=storage)
    assert len({config["objective.name"] for _, config in results}) == 4


def test_gated_hyperparameters_are_drawn_only_when_their_gate_is_on():
    sweep = SweepConfig(parameters={
        "objective.f_alpha_divergence_coef": {"distribution": "uniform", "min": 0.1, "max": 0.9},
        "objective.f_divergence_type": {"values": ["reverse_kl", "alpha_divergence"]},
        "objective.ref_model_sync_steps": {"values": [2, 4]},
        "objective.sync_ref_model": {"values": [True, False]},
    })
    combos = set()
    for _, config in sample(sweep, 40, objective=ObjectiveConfig(name="sigmoid")):
        alpha = config["objective.f_divergence_type"] == "alpha_divergence"
        assert ("objective.f_alpha_divergence_coef" in config) == alpha
        assert ("objective.ref_model_sync_steps" in config) == config["objective.sync_ref_model"]
        combos.add((alpha, config["objective.sync_ref_model"]))
    assert len(combos) == 4


def test_mixtures_are_categorical_values_with_their_own_branches():
    sweep = SweepConfig(parameters=yaml.safe_load("""
objective.name:
  values: [[sigmoid, bco_pair, sft], dpo]
  parameters:
    sigmoid+bco_pair+sft:
      objective.loss_weights: {values: [[0.8, 0.2, 1.0], [1.0, 1.0, 1.0]]}
"""))
    seen = set()
    for recorded, config in sample(sweep, 20):
        name = config["objective.name"]
        seen.add(str(name))
        if isinstance(name, list):
            assert name == ["sigmoid", "bco_pair", "sft"] and config["objective.loss_weights"] in ([0.8, 0.2, 1.0],
                                                                                                   [1.0, 1.0, 1.0])
            assert recorded["objective.name"] == "sigmoid+bco_pair+sft"  # Optuna sees the label
        else:
            assert "objective.loss_weights" not in config
    assert len(seen) == 2


# --- validation ---------------------------------------------------------------------------------


def problems(parameters: dict, **sections) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        load_config({"sweep": {"metric": {"name": "eval/loss", "goal": "minimize"}, "parameters": parameters},
                     **sections})
    return err.value.problems


NAME = "sweep.parameters.objective.name"


@pytest.mark.parametrize("nested, field, words", [
    ({"simpo": {"objective.beta": {"distribution": "uniform", "min": 10, "max": 1}}},
     f"{NAME}.parameters.simpo.objective.beta", "must be < max"),
    ({"sigmoid": {"objective.beta": {"values": [0.1]}}}, NAME, "parameters: 'sigmoid' is not one of the values"),
    ({"dpo": {"objective.gamma": {"values": [0.5]}}}, f"{NAME}.parameters.dpo.objective.gamma",
     "dpo does not read gamma"),
    ({"dpo": {"objective.beta": {"values": [0.0, 0.1]}}}, f"{NAME}.parameters.dpo.objective.beta",
     "value 0.0 is invalid with objective.name='dpo'"),
    ({"dpo": {"objective.name": {"values": ["ipo"]}}}, f"{NAME}.parameters.dpo.objective.name", "decided before"),
    ({"dpo": {"train.learnig_rate": {"values": [1e-4]}}}, f"{NAME}.parameters.dpo.train.learnig_rate", "no config key"),
])
def test_bad_nested_specs_are_refused_by_their_dotted_key(nested, field, words):
    found = problems({"objective.name": {"values": ["dpo", "simpo"], "parameters": nested}})
    assert any(f == field and words in message for f, message in found), found


def test_an_objective_value_is_checked_with_its_own_nested_settings():
    exo = {"objective.name": {"values": ["dpo", "exo_pair"]}}
    assert any("exo_pair needs label_smoothing > 0" in m for _, m in problems(exo))
    exo["objective.name"]["parameters"] = {"exo_pair": {"objective.label_smoothing": {"value": 1e-3}}}
    assert load_config({"sweep": {"parameters": exo}}).objectives_in_play() == ["dpo", "exo_pair"]


def test_grid_and_unread_top_level_parameters_are_refused():
    nested = {"objective.name": {"values": ["dpo", "simpo"], "parameters": {"dpo": {"objective.beta": {"values": [0.1]}}}}}
    with pytest.raises(ConfigError, match="method grid cannot branch"):
        load_config({"sweep": {"method": "grid", "parameters": nested}})
    with pytest.raises(ConfigError, match="dpo does not read alpha, so it would never be sampled"):
        load_config({"sweep": {"parameters": {"objective.alpha": {"values": [0.3, 0.7]}}}})


def test_validate_refuses_a_bad_nested_spec_before_anything_is_written(tmp_path, capsys):
    config = {"name": "nested", "storage": {"path": str(tmp_path / "runs")},
              "sweep": {"parameters": {"objective.name": {"values": ["dpo", "simpo"], "parameters": {
                  "simpo": {"objective.gamma_beta_ratio": {"distribution": "uniform", "min": 0.8, "max": 0.1}}}}}}}
    path = tmp_path / "nested.yaml"
    path.write_text(yaml.safe_dump(config))
    for verb in ("validate", "run"):
        assert main([verb, str(path)]) == 2
        out = capsys.readouterr()
        assert f"{NAME}.parameters.simpo.objective.gamma_beta_ratio" in out.out + out.err
    assert not (tmp_path / "runs").exists()


def test_the_demo_objectives_config_loads_and_fits_each_range():
    cfg = load_config("configs/objectives-demo.yaml")
    assert cfg.objectives_in_play() == ["dpo", "sigmoid_norm", "simpo", "apo_zero"]
    spec = cfg.sweep.parameters["objective.name"].parameters
    assert math.isclose(spec["dpo"]["objective.beta"].max, 0.5) and spec["sigmoid_norm"]["objective.beta"].min >= 1


def test_set_reaches_nested_specs():
    cfg = load_config("configs/objectives-demo.yaml", [
        "sweep.parameters.objective.name.parameters.dpo.objective.beta.max=0.3",
        "sweep.parameters.objective.name.parameters.apo_zero.objective.beta={values: [0.1, 0.2]}",
    ])
    branches = cfg.sweep.parameters["objective.name"].parameters
    assert branches["dpo"]["objective.beta"].max == 0.3 and branches["apo_zero"]["objective.beta"].values == [0.1, 0.2]


def test_the_studys_searcher_hands_tune_plain_dotted_keys(tmp_path):
    """Through Ray Tune's OptunaSearch, which merges Optuna's own names into the config it returns
    (and would nest any name with a '/'): the trial config holds the dotted keys only."""
    from sweep.config.schema import PrefsweepConfig
    from sweep.study.optuna_search import StudySearch

    cfg = PrefsweepConfig(name="branches", sweep={"parameters": PER_OBJECTIVE, "method": "random"})
    search = StudySearch(cfg, optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db"))
    for number in range(12):
        config = search.suggest(f"t{number}")
        assert set(config) >= {"objective.name", "objective.beta", "train.learning_rate"}, config
        assert all(isinstance(value, (str, float, int)) for value in config.values()), config
        search.on_trial_complete(f"t{number}", {"eval/rewards/accuracies": 0.5, "training_iteration": 1})
