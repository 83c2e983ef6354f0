"""configs/objectives-demo.yaml on real Ray, cut down: one sweep over dpo, sigmoid_norm, simpo and
apo_zero with ranges that fit each, where every trial samples only its own objective's parameters,
apo_zero's trial moves its reference (TR-DPO, nested under its value) and the cached objectives
(dpo, sigmoid_norm) share the study's one reference pass."""
from __future__ import annotations

import pytest
from helpers import optuna_trials, runs_by_kind

from sweep.storage import reference_store

pytestmark = pytest.mark.ray

# Optuna's random sampler with this seed draws the four objectives in its first four trials
# (dpo, apo_zero, sigmoid_norm, simpo); the test says so if a new Optuna draws otherwise.
SEED = 6
CUT_DOWN = ["--set", "sweep.method=random", "--set", f"sweep.seed={SEED}", "--set", "sweep.num_trials=4",
            "--set", "sweep.max_concurrent_trials=2", "--set", "sweep.early_terminate=null",
            "--set", "train.max_steps=4", "--set", "train.eval_every=4", "--set", "train.logging_steps=4",
            "--set", "train.warmup_steps=0",
            "--set", "sweep.parameters.objective.name.parameters.apo_zero.objective.sync_ref_model={value: true}",
            "--set", "sweep.parameters.objective.name.parameters.apo_zero.objective.ref_model_sync_steps={value: 2}"]

OWN = {  # what each objective's trial samples, by Optuna's (branch-qualified) names
    "dpo": {"objective.name", "objective.name=dpo | objective.beta", "train.learning_rate"},
    "sigmoid_norm": {"objective.name", "objective.name=sigmoid_norm | objective.beta", "train.learning_rate"},
    "simpo": {"objective.name", "objective.name=simpo | objective.beta", "objective.name=simpo | objective.gamma_beta_ratio",
              "train.learning_rate"},
    "apo_zero": {"objective.name", "objective.beta", "train.learning_rate"},
}


def test_each_objective_samples_its_own_ranges_and_the_cached_ones_share_one_pass(cli, tmp_path):
    storage = tmp_path / "runs"
    cli("run", "configs/objectives-demo.yaml", "--set", f"storage.path={storage}", "--set", "name=objectives", *CUT_DOWN)

    trials = optuna_trials(storage, "objectives")
    drawn = {t.params["objective.name"]: t for t in trials}
    assert set(drawn) == set(OWN), f"seed {SEED} no longer draws every objective: {[t.params for t in trials]}"
    for name, trial in drawn.items():
        assert set(trial.params) == OWN[name], (name, trial.params)
        used = trial.user_attrs["prefsweep.params"]
        low, high = (0.01, 0.5) if name == "dpo" else (1.0, 10.0) if name != "apo_zero" else (0.05, 0.2)
        assert low <= used["objective.beta"] <= high, (name, used)

    runs = {run.data.params["objective.name"]: run for run in runs_by_kind(storage, "trial")}
    assert set(runs) == set(OWN) and all(r.info.status == "FINISHED" for r in runs.values())
    assert all("eval/rewards/accuracies" in r.data.metrics for r in runs.values())
    assert runs["apo_zero"].data.params["objective.sync_ref_model"] == "True"
    assert runs["simpo"].data.params["swept.objective.gamma_beta_ratio"]
    notes = {name: run.data.tags["prefsweep.reference_cache"] for name, run in runs.items()}
    assert notes["dpo"] == notes["sigmoid_norm"] and notes["dpo"].startswith("on: "), notes
    assert notes["apo_zero"].startswith("off: apo_zero's reference moves during training (TR-DPO soft"), notes
    assert notes["simpo"] == "off: simpo has no reference model", notes
    assert reference_store.count_passes(str(storage / "objectives")) == 1
    (parent,) = runs_by_kind(storage, "study")
    assert parent.data.tags["prefsweep.reference_passes"] == "1"
