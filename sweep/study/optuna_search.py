"""Ray Tune's OptunaSearch, linked to the rest of a study: each Optuna trial carries the Tune
trial id (and, set by the trial itself, its MLflow run id) as user attributes, and a trial
that ASHA stopped early is told to Optuna as PRUNED (its last intermediate value kept), so
optuna-dashboard shows it stopped, not complete. Optuna's samplers treat pruned trials as
what they are: runs that looked worse early."""
from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from sweep.config.schema import PrefsweepConfig
from sweep.storage.databases import optuna_storage
from sweep.study.search_space import DefineByRun, sampler_for, trial_values
from sweep.study.trials import trial_config

TRIAL_ID_ATTR = "prefsweep.trial_id"
MLFLOW_RUN_ATTR = "prefsweep.mlflow_run_id"


def stopped_early(cfg: PrefsweepConfig, result: dict[str, Any] | None) -> bool:
    """A last result short of its trial's max_steps: stopped by the scheduler, not finished."""
    if not result or "step" not in result:
        return False
    return int(result["step"]) < trial_config(cfg, result.get("config") or {}).train.max_steps


class StudySearch(OptunaSearch):
    def __init__(self, cfg: PrefsweepConfig, storage: optuna.storages.BaseStorage):
        # Several metrics: Optuna's multi-objective study (its TPE and random samplers take it);
        # Tune's OptunaSearch then tells only final values (Optuna has no intermediate ones there).
        objectives = cfg.sweep.objectives
        multi = len(objectives) > 1
        super().__init__(space=DefineByRun(cfg.sweep, cfg.objective),
                         metric=[m.name for m in objectives] if multi else objectives[0].name,
                         mode=[m.mode for m in objectives] if multi else objectives[0].mode,
                         sampler=sampler_for(cfg.sweep), storage=storage, study_name=cfg.name)
        self._cfg = cfg

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config = trial_values(config)  # nested parameters' Optuna names are not config keys
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not error and trial_id in self._ot_trials and trial_id not in self._completed_trials \
                and stopped_early(self._cfg, result):
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


def link_trial(storage_url: str, study_name: str, trial_id: str, run_id: str) -> int | None:
    """From inside a trial: record its MLflow run id on its Optuna trial -> that trial's number
    (None when the searcher has not tagged one, e.g. a study created before the links)."""
    storage = optuna_storage(storage_url)  # bounded, idle connections given back (sweep.storage.databases)
    study_id = storage.get_study_id_from_name(study_name)
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        if trial.user_attrs.get(TRIAL_ID_ATTR) == trial_id:
            if not trial.state.is_finished():  # a restarted trial whose Optuna trial already ended
                storage.set_trial_user_attr(trial._trial_id, MLFLOW_RUN_ATTR, run_id)
            return trial.number
    return None
