"""What a sweep prints while it runs: one line per trial event from the driver, naming the
sweep metric, instead of Ray's wide tables (their columns cut metric names to 20 characters)
and every worker's own output (model loading bars, worker-group set-up, placement-group
messages), which stays in Ray's logs (`/tmp/ray/session_latest/logs`, or the dashboard).
`PREFSWEEP_WORKER_LOGS=1` shows the workers' output on the console again."""
from __future__ import annotations

import math
import os
import sys

from ray import tune

from sweep.config.schema import PrefsweepConfig
from sweep.study.trials import trial_config

RESUMED_KEY = "resumed_from_step"  # in a trial's first report after it resumed from a checkpoint


def worker_logs_on_console() -> bool:
    return os.environ.get("PREFSWEEP_WORKER_LOGS", "").strip().lower() in ("1", "true", "yes", "on")


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


class SweepProgress(tune.Callback):
    def __init__(self, cfg: PrefsweepConfig, stream=None):
        self.cfg = cfg
        self.metric = cfg.sweep.metric.name
        self.sign = 1 if cfg.sweep.metric.goal == "maximize" else -1
        self.best: tuple[float, str] | None = None
        self.stream = stream

    def _say(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(f"[prefsweep {self.cfg.name}] {text}\n")
        stream.flush()

    def _max_steps(self, trial) -> int:
        return trial_config(self.cfg, trial.config or {}).train.max_steps

    def on_trial_start(self, iteration, trials, trial, **info):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((trial.config or {}).items()))
        self._say(f"trial {trial.trial_id} started: {params or 'the config as given'}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if RESUMED_KEY in result:
            self._say(f"trial {trial.trial_id} resumed from the checkpoint of step {int(result[RESUMED_KEY])}")
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or self.sign * value > self.sign * self.best[0]:
                self.best = (float(value), trial.trial_id)
        best = f" (best {_fmt(self.best[0])}, trial {self.best[1]})" if self.best else ""
        self._say(f"trial {trial.trial_id} step {int(result.get('step', 0))}/{self._max_steps(trial)} "
                  f"{self.metric}={_fmt(value)}{best}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        step, end = int(last.get("step", 0)), self._max_steps(trial)
        by = " by ASHA" if self.cfg.sweep.early_terminate is not None else ""
        how = "finished" if step >= end else f"stopped early{by} at step {step}/{end}"
        self._say(f"trial {trial.trial_id} {how}: {self.metric}={_fmt(last.get(self.metric))}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} failed (the sweep goes on); traceback: {trial.error_file or 'in Ray logs'}")
