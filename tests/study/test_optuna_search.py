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
