"""The study's Optuna searcher: Tune trial ids on Optuna trials, ASHA-stopped trials told as
PRUNED, and the trial's own link to its MLflow run."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from sweep.config.schema import PrefsweepConfig
from sweep.study.optuna_search import MLFLOW_RUN_ATTR, TRIAL_ID_ATTR, StudySearch, link_trial, stopped_early

METRIC = "eval/rewards/accuracies"
CFG = PrefsweepConfig(name="links", train={"max_steps": 100, "eval_every": 50},
                      sweep={"parameters": {"objective.beta": {"values": [0.1, 0.2]},
                                            "train.max_steps": {"values": [60, 100]}}})




def test_stopped_early_is_read_against_the_trials_own_max_steps():
    assert stopped_early(CFG, {"step": 50, "config": {}})
    assert not stopped_early(CFG, {"step": 100, "config": {}})
    assert not stopped_early(CFG, {"step": 60, "config": {"train.max_steps": 60}})  # swept: its own end
    assert not stopped_early(CFG, None) and not stopped_early(CFG, {"loss": 1.0})


def test_trials_carry_their_tune_id_and_asha_stopped_ones_are_pruned(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = StudySearch(CFG, optuna.storages.RDBStorage(url))
    configs = {}
    for n in range(6):
        trial_id = f"t{n}"
        config = search.suggest(trial_id)
        full = config["train.max_steps"]
        steps = [50] if n % 2 else [50, full] if full == 100 else [50, 60]
        result = {}
        for i, step in enumerate(steps, start=1):
            result = {METRIC: 0.5 + i / 10, "training_iteration": i, "step": step, "config": config}
            search.on_trial_result(trial_id, result)
        search.on_trial_complete(trial_id, result)
        configs[trial_id] = (config, steps)
    study = optuna.load_study(study_name="links", storage=url)
    for trial in study.get_trials():
        trial_id = trial.user_attrs[TRIAL_ID_ATTR]
        config, steps = configs[trial_id]
        expected = TrialState.PRUNED if steps[-1] < config["train.max_steps"] else TrialState.COMPLETE
        assert trial.state == expected, (trial_id, steps, config)
        assert trial.value == 0.5 + len(steps) / 10  # a pruned trial keeps its last intermediate value
        assert sorted(trial.intermediate_values) == list(range(1, len(steps) + 1))
    assert {t.state for t in study.get_trials()} == {TrialState.PRUNED, TrialState.COMPLETE}


def test_a_trial_records_its_mlflow_run_on_its_optuna_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = StudySearch(CFG, optuna.storages.RDBStorage(url))
    search.suggest("a")
    search.suggest("b")
    assert link_trial(url, "links", "b", "run-b") == 1
    assert link_trial(url, "links", "zzz", "run-z") is None
    (first, second) = optuna.load_study(study_name="links", storage=url).get_trials()
    assert second.user_attrs == {TRIAL_ID_ATTR: "b", MLFLOW_RUN_ATTR: "run-b",
                                 "prefsweep.params": second.user_attrs["prefsweep.params"]}
    assert MLFLOW_RUN_ATTR not in first.user_attrs


def test_several_metrics_make_a_multi_objective_study(tmp_path):
    """sweep.metrics: one Optuna study with a direction per metric, final values told, trials
    ASHA stopped told PRUNED (no values); the TPE sampler proposes from it."""
    cfg = PrefsweepConfig(name="multi", train={"max_steps": 100, "eval_every": 50},
                          sweep={"metrics": [{"name": "eval/gen/win_rate"}, {"name": "eval/gen/kl", "goal": "minimize"}],
                                 "parameters": {"objective.beta": {"distribution": "uniform", "min": 0.05, "max": 0.5}}},
                          evaluation={"judge": "builtin:demo", "every": "eval"})
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = StudySearch(cfg, optuna.storages.RDBStorage(url))
    for n in range(12):
        config = search.suggest(f"t{n}")
        beta = config["objective.beta"]
        stopped = n == 3
        result = {"eval/gen/win_rate": 0.5 + beta, "eval/gen/kl": 10 * beta, "training_iteration": 1,
                  "step": 50 if stopped else 100, "config": config}
        search.on_trial_result(f"t{n}", result)
        search.on_trial_complete(f"t{n}", result)
    study = optuna.load_study(study_name="multi", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = study.get_trials()
    assert trials[3].state == TrialState.PRUNED and trials[3].values is None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 11 and all(len(t.values) == 2 for t in complete)
    # every trial here trades one metric for the other: all of them are on Optuna's front
    assert len(study.best_trials) == 11
