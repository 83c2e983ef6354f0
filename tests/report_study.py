"""A finished study made by hand, without Ray: a real Optuna SQLite study (with the trials'
links), real MLflow SQLite runs (a parent, a child per trial with step metrics) and the Tune
trial rows the report would read from Ray's state. The report tests read it back."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.storage.record import StudyRecord
from sweep.study.optuna_search import MLFLOW_RUN_ATTR, TRIAL_ID_ATTR
from sweep.study.trials import TrialRow

METRIC = "eval/rewards/accuracies"
BETAS = [0.01, 0.1, 0.2, 0.5]
# (beta, learning rate, final accuracy): the best three all use beta 0.2 and learning rates of
# 5e-5..7e-5; beta 0.01 is always poor, as are learning rates of 5e-4 and above.
TRIALS = [(0.2, 6e-5, 0.95), (0.2, 5e-5, 0.93), (0.2, 7e-5, 0.91), (0.1, 3e-5, 0.80), (0.5, 2e-5, 0.72),
          (0.1, 8e-6, 0.66), (0.01, 5e-4, 0.40), (0.01, 9e-4, 0.35)]
GEN = {  # per trial: (judge reward, win rate, KL); the reference's own reward is 0.3
    0: (0.9, 0.80, 4.0), 1: (0.7, 0.70, 1.5), 2: (0.6, 0.62, 0.5), 3: (0.65, 0.60, 3.0),
}


def config(name: str, storage: Path, **sweep) -> PrefsweepConfig:
    return PrefsweepConfig(name=name, storage={"path": str(storage)}, train={"max_steps": 100, "eval_every": 50},
                           evaluation={"judge": "builtin:demo"},
                           sweep={"parameters": {"objective.beta": {"values": BETAS},
                                                 "train.learning_rate": {"distribution": "log_uniform_values",
                                                                         "min": 1e-6, "max": 1e-3}}, **sweep})


def build(storage: Path, name: str = "syn", trials=TRIALS, gen: dict | None = None, stopped: int = 6,
          **sweep) -> tuple[StudyRecord, list[TrialRow]]:
    """`stopped`: trials from this index on were stopped by ASHA at step 50 (PRUNED in Optuna)."""
    cfg = config(name, storage, **sweep)
    storage.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{storage}/mlflow.db"
    experiment = tracking.ensure_experiment(cfg, uri)
    parent = tracking.create_run(uri, experiment, name, tags={tracking.KIND_TAG: "study"})
    optuna_url = f"sqlite:///{storage}/optuna.db"
    objectives = cfg.sweep.objectives  # several with sweep.metrics: a multi-objective Optuna study
    study = optuna.create_study(study_name=name, storage=optuna_url, directions=[m.goal for m in objectives])
    dists = {"objective.beta": CategoricalDistribution(BETAS),
             "train.learning_rate": FloatDistribution(1e-6, 1e-3, log=True)}
    rows = []
    for i, (beta, lr, value) in enumerate(trials):
        trial_id = f"t{i:02d}"
        early = i >= stopped
        step = 50 if early else 100
        params = {"objective.beta": beta, "train.learning_rate": lr}
        run = tracking.create_run(uri, experiment, trial_id, tags={
            tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: trial_id, tracking.KIND_TAG: "trial"})
        history = {50: value + 0.02, 100: value} if not early else {50: value}  # the best was at step 50
        for s, v in history.items():
            tracking.log_metrics(uri, run, {METRIC: v}, step=s)
        for s in range(25, step + 1, 25):
            tracking.log_metrics(uri, run, {"loss": 0.7 - value * s / 400}, step=s)
        metrics = {METRIC: value, "loss": 0.7 - value * step / 400, "eval/loss": 0.8 - value / 2}
        if gen and i in gen:
            reward, win, kl = gen[i]
            metrics.update({"eval/gen/reward": reward, "eval/gen/win_rate": win, "eval/gen/kl": kl,
                            "eval/gen/ref_reward": 0.3, "eval/gen/length": 20.0})
        values = [metrics[m.name] for m in objectives] if not early or len(objectives) == 1 else None
        study.add_trial(create_trial(
            state=TrialState.PRUNED if early else TrialState.COMPLETE, values=values, params=params, distributions=dists,
            intermediate_values={s: v for s, v in history.items()},
            user_attrs={TRIAL_ID_ATTR: trial_id, MLFLOW_RUN_ATTR: run}))
        rows.append(TrialRow(trial_id=trial_id, state="stopped" if early else "finished", params=params, value=value,
                             evaluations=step // 50, expected_evaluations=2, step=step, max_steps=100,
                             checkpoint_path=f"{storage}/{name}/train/{trial_id}/checkpoint", metrics=metrics))
    record = StudyRecord(name=name, config=cfg.model_dump(mode="json"), tracking_uri=uri, experiment_id=experiment,
                         parent_run_id=parent, optuna_url=optuna_url, state="finished")
    record.save(str(storage))
    return record, rows
