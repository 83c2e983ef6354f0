"""The sweep's console lines: each trial event once, with the sweep metric and the best so far."""
from __future__ import annotations

import io
from types import SimpleNamespace

from sweep.config.schema import PrefsweepConfig
from sweep.study.console import SweepProgress

CFG = PrefsweepConfig(name="demo", train={"max_steps": 100})
METRIC = "eval/rewards/accuracies"


def test_lines_name_the_metric_the_best_trial_early_stops_resumes_and_failures():
    out = io.StringIO()
    progress = SweepProgress(CFG, stream=out)
    a = SimpleNamespace(trial_id="a", config={"objective.beta": 0.1}, last_result={}, error_file=None)
    b = SimpleNamespace(trial_id="b", config={"train.max_steps": 40}, last_result={}, error_file="/x/error.txt")
    progress.on_trial_start(0, [], a)
    progress.on_trial_result(0, [], a, {METRIC: 0.8, "step": 50})
    progress.on_trial_result(0, [], b, {METRIC: 0.9, "step": 20, "resumed_from_step": 10})
    a.last_result = {METRIC: 0.7, "step": 50}
    progress.on_trial_complete(0, [], a)
    b.last_result = {METRIC: 0.9, "step": 40}
    progress.on_trial_complete(0, [], b)
    progress.on_trial_error(0, [], b)
    lines = out.getvalue().splitlines()
    assert lines == [
        "[prefsweep demo] trial a started: objective.beta=0.1",
        f"[prefsweep demo] trial a step 50/100 {METRIC}=0.8 (best 0.8, trial a)",
        "[prefsweep demo] trial b resumed from the checkpoint of step 10",
        f"[prefsweep demo] trial b step 20/40 {METRIC}=0.9 (best 0.9, trial b)",
        f"[prefsweep demo] trial a stopped early by ASHA at step 50/100: {METRIC}=0.7",
        f"[prefsweep demo] trial b finished: {METRIC}=0.9",
        "[prefsweep demo] trial b failed (the sweep goes on); traceback: /x/error.txt",
    ]
