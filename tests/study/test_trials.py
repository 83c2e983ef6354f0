"""Assembling a study's trial rows from Tune's trials, joining them with Optuna's, and telling
a trial's own failure from the cluster's."""
from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import ray.exceptions
import ray.train
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.config.schema import PrefsweepConfig
from sweep.evaluation.judges import JudgeError
from sweep.study.driver import training_failed
from sweep.study.search_space import PARAMS_ATTR
from sweep.study.trials import join_trials, row_from_trial

CFG = PrefsweepConfig(train={"max_steps": 100, "eval_every": 50})


def tune_trial(trial_id: str, status: str, step: int, value=0.8, **params):
    last = {"step": step, "training_iteration": step // 50, "eval/rewards/accuracies": value, "loss": 0.5,
            "checkpoint_path": f"/ck/{trial_id}", "tokens_per_second": 1000.0, "note": "text"}
    return SimpleNamespace(trial_id=trial_id, status=status, config=params, last_result=last)


def test_rows_tell_finished_stopped_failed_and_interrupted_apart():
    finished = row_from_trial(tune_trial("a", "TERMINATED", 100, **{"objective.beta": 0.1}), CFG, "finished")
    assert (finished.state, finished.value, finished.evaluations, finished.expected_evaluations) == ("finished", 0.8, 2, 2)
    assert finished.metrics == {"eval/rewards/accuracies": 0.8, "loss": 0.5, "tokens_per_second": 1000.0}
    assert finished.params == {"objective.beta": 0.1} and finished.checkpoint_path == "/ck/a"
    assert row_from_trial(tune_trial("b", "TERMINATED", 50), CFG, "finished").state == "stopped"  # by ASHA
    failed = row_from_trial(tune_trial("c", "ERROR", 50), CFG, "finished", error="ValueError: boom")
    assert (failed.state, failed.error) == ("failed", "ValueError: boom")
    assert row_from_trial(tune_trial("d", "RUNNING", 50), CFG, "running").state == "running"
    assert row_from_trial(tune_trial("d", "RUNNING", 50), CFG, "interrupted").state == "interrupted"
    assert row_from_trial(tune_trial("e", "TERMINATED", 100, value=float("nan")), CFG, "finished").value is None
    # A trial's own max_steps (swept) decides whether it ran to the end.
    short = row_from_trial(tune_trial("f", "TERMINATED", 40, **{"train.max_steps": 40}), CFG, "finished")
    assert (short.state, short.max_steps, short.expected_evaluations) == ("finished", 40, 1)


def optuna_trial(number: int, state: TrialState, beta: float, value=None, steps=()):
    trial = create_trial(state=state, value=value, params={"objective.beta": beta},
                         distributions={"objective.beta": CategoricalDistribution([0.1, 0.2, 0.3])},
                         intermediate_values={s: 0.5 for s in steps})
    trial.number = number
    return trial


def test_optuna_and_tune_trials_join_on_their_params_in_ask_order():
    rows = [row_from_trial(tune_trial("t1", "TERMINATED", 50, **{"objective.beta": 0.1, "train.seed": 1}), CFG,
                           "finished"),
            row_from_trial(tune_trial("t2", "TERMINATED", 100, **{"objective.beta": 0.1, "train.seed": 1}), CFG,
                           "finished")]
    trials = [optuna_trial(0, TrialState.COMPLETE, 0.1, 0.7, steps=(50,)),
              optuna_trial(1, TrialState.COMPLETE, 0.1, 0.9, steps=(50, 100)),
              optuna_trial(2, TrialState.RUNNING, 0.3)]
    joined = join_trials(trials, rows, "interrupted")
    assert [t["trial_id"] for t in joined] == ["t1", "t2", None]  # same params: the n-th ask is the n-th trial
    assert [t["state"] for t in joined] == ["stopped", "finished", "interrupted"]  # Tune knows ASHA stopped t1
    assert joined[0]["params"] == {"objective.beta": 0.1, "train.seed": 1}  # Tune's, with the constants
    assert joined[2]["params"] == {"objective.beta": 0.3}
    assert joined[1]["intermediate_values"] == [[50, 0.5], [100, 0.5]] and joined[1]["value"] == 0.9
    assert joined[1]["checkpoint_path"] == "/ck/t2" and joined[2]["evaluations"] == 0


def test_a_pending_tune_row_does_not_hide_what_optuna_already_knows():
    rows = [row_from_trial(tune_trial("t1", "PENDING", 0, **{"objective.beta": 0.2}), CFG, "running")]
    (joined,) = join_trials([optuna_trial(0, TrialState.RUNNING, 0.2)], rows, "running")
    assert joined["state"] == "running" and joined["trial_id"] == "t1"


@pytest.mark.parametrize("failures, expected", [
    ({0: ValueError("loss is nan")}, True),  # the trial's own code: restarting elsewhere would not help
    ({0: JudgeError("judge python:m:f raised KeyError")}, True),  # what a worker makes of the scorer's failure
    ({0: ray.exceptions.RaySystemError("node died")}, False),  # the cluster: Tune restarts it
    ({0: ValueError("x"), 1: ray.exceptions.RaySystemError("y")}, False),
    ({}, False),
])
def test_training_failed_tells_the_trials_own_errors_from_the_clusters(failures, expected):
    assert training_failed(ray.train.WorkerGroupError("workers failed", failures)) is expected


def test_other_errors_are_not_the_trials_own():
    assert training_failed(RuntimeError("controller lost")) is False
    assert training_failed(optuna.exceptions.OptunaError("x")) is False


def test_rounded_values_join_through_the_values_the_trial_used():
    raw = create_trial(state=TrialState.COMPLETE, value=0.6, params={"train.learning_rate": 1.4e-5},
                       distributions={"train.learning_rate": FloatDistribution(1e-5, 1e-3, log=True)},
                       user_attrs={PARAMS_ATTR: {"train.learning_rate": 1e-5}})
    rows = [row_from_trial(tune_trial("t1", "TERMINATED", 100, **{"train.learning_rate": 1e-5}), CFG, "finished")]
    (joined,) = join_trials([raw], rows, "finished")
    assert joined["trial_id"] == "t1" and joined["params"] == {"train.learning_rate": 1e-5}
