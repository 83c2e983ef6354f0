"""The study's shared inputs on a real Ray cluster: a 4-trial sweep tokenizes its rows once
and runs exactly one reference pass (counted in the study's pass records and on the MLflow
parent run), every trial reads the same entry, a later study with the same inputs runs no
pass at all, and a trial's numbers equal those of a run with a live reference (`prefsweep
train` runs one, the cache off) to float tolerance. Sweeps over what changes tokenization get
one tokenization per distinct setting."""
from __future__ import annotations

import json
import random

import pytest
import yaml
from mlflow import MlflowClient

from sweep import tracking
from sweep.storage import reference_store

pytestmark = pytest.mark.ray

WORDS = "the a cat dog sky blue green tea coffee run walk good bad please thanks help garden bread".split()


def runs_by_kind(storage, kind: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("prefsweep")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefsweep.kind` = '{kind}'")


def write_pairs(path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt": text(rng.randint(2, 10)), "chosen": " " + text(rng.randint(1, 16)),
                                "rejected": " " + text(rng.randint(1, 16))}) + "\n")


def test_four_trials_one_reference_pass_same_numbers_as_live(cli, tmp_path):
    storage = tmp_path / "runs"
    write_pairs(tmp_path / "train.jsonl", 48, seed=1)
    write_pairs(tmp_path / "eval.jsonl", 16, seed=2)
    config = {
        "name": "cached",
        "data": {"train": {"path": str(tmp_path / "train.jsonl")}, "eval": {"path": str(tmp_path / "eval.jsonl")},
                 "format": "paired", "max_length": 64, "max_prompt_length": 24},
        "objective": {"name": "dpo", "beta": 0.1},
        "train": {"learning_rate": 1e-3, "per_device_batch_size": 4, "max_steps": 12, "eval_every": 12,
                  "logging_steps": 12, "seed": 0},
        "sweep": {"method": "grid", "num_trials": 4, "max_concurrent_trials": 2, "early_terminate": None,
                  "metric": {"name": "eval/rewards/accuracies", "goal": "maximize"},
                  "parameters": {"objective.beta": {"values": [0.1, 0.3]},
                                 "train.learning_rate": {"values": [1e-3, 1e-4]}}},
        "storage": {"path": str(storage)},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    cli("run", str(path))

    study = str(storage / "cached")
    assert reference_store.count_passes(study) == 1
    (parent,) = runs_by_kind(storage, "study")
    assert parent.data.tags[tracking.PASSES_TAG] == "1" and parent.data.tags[tracking.TOKENIZATIONS_TAG] == "1"
    trials = runs_by_kind(storage, "trial")
    assert len(trials) == 4
    notes = {t.data.tags[tracking.CACHE_TAG] for t in trials}
    assert len(notes) == 1 and notes.pop().startswith("on: ")  # all four read the one entry

    # A second study on the same model, rows and lengths: the entry outlived the first.
    cli("run", str(path), "--set", "name=again", "--set", "sweep.method=random", "--set", "sweep.num_trials=1")
    assert reference_store.count_passes(str(storage / "again")) == 0
    (again,) = [run for run in runs_by_kind(storage, "study") if run.data.tags[tracking.STUDY_TAG] == "again"]
    assert again.data.tags[tracking.PASSES_TAG] == "0"
    (entry,) = reference_store.list_entries(str(storage))
    assert entry["used_by"] == ["again", "cached"]

    # The same hyperparameters with a live reference: `prefsweep train` with the cache off.
    cli("train", str(path), "--set", "name=live", "--set", "train.reference_cache=false")
    (live,) = runs_by_kind(storage, "train")
    (twin,) = [t for t in trials if t.data.params["swept.objective.beta"] == "0.1"
               and float(t.data.params["swept.train.learning_rate"]) == 1e-3]
    for name in ("loss", "rewards/margins", "eval/loss", "eval/rewards/margins", "eval/logps/chosen"):
        assert twin.data.metrics[name] == pytest.approx(live.data.metrics[name], rel=1e-4, abs=1e-5), name


def small_sweep(tmp_path, name: str, parameters: dict, **sweep) -> tuple[dict, object]:
    """A 4-step grid sweep on 48 random pairs, two trials at a time, no early stopping."""
    write_pairs(tmp_path / "train.jsonl", 48, seed=1)
    write_pairs(tmp_path / "eval.jsonl", 16, seed=2)
    config = {
        "name": name,
        "data": {"train": {"path": str(tmp_path / "train.jsonl")}, "eval": {"path": str(tmp_path / "eval.jsonl")},
                 "format": "paired", "max_length": 64, "max_prompt_length": 24},
        "train": {"learning_rate": 1e-4, "per_device_batch_size": 4, "max_steps": 4, "eval_every": 4,
                  "logging_steps": 4},
        "sweep": {"method": "grid", "num_trials": 16, "max_concurrent_trials": 2, "early_terminate": None,
                  "parameters": parameters, **sweep},
        "storage": {"path": str(tmp_path / "runs")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return config, path


def trial_notes(storage, key: str) -> dict:
    """{swept value of `key`: the trial's reference-cache tag}, every trial finished."""
    trials = runs_by_kind(storage, "trial")
    assert {t.data.tags["prefsweep.state"] for t in trials} == {"finished"}, [t.data.tags for t in trials]
    return {t.data.params[f"swept.{key}"]: t.data.tags[tracking.CACHE_TAG] for t in trials}


def test_objective_sweep_mixing_paired_unpaired_and_reference_free_one_pass_per_entry(cli, tmp_path):
    """Swept keys that change the reference entry send the pass into the trials (issue 9:
    it was captured by the trial's placement group and every reference trial failed).
    dpo and ipo read the same pairs' log-probs, kto and pmpo the same accepted/rejected rows:
    two entries, two passes, for five trials; simpo has no reference."""
    config, path = small_sweep(tmp_path, "objs", {"objective.name": {"values": ["dpo", "ipo", "simpo", "kto", "pmpo"]}},
                               metric={"name": "eval/loss", "goal": "minimize"})
    proc = cli("run", str(path))
    assert "trials failed" not in proc.stdout, proc.stdout[-3000:]
    storage = tmp_path / "runs"
    notes = trial_notes(storage, "objective.name")
    assert len(notes) == 5
    assert notes["simpo"].startswith("off: simpo has no reference")
    assert notes["dpo"] == notes["ipo"] and notes["dpo"].startswith("on: ")
    assert notes["kto"] == notes["pmpo"] and notes["kto"].startswith("on: ")
    assert notes["dpo"] != notes["kto"]
    assert reference_store.count_passes(str(storage / "objs")) == 2
    (parent,) = runs_by_kind(storage, "study")
    assert parent.data.tags[tracking.PASSES_TAG] == "2"
    assert parent.data.tags[tracking.TOKENIZATIONS_TAG] == "2"  # pairs (dpo, ipo, simpo) and rows (kto, pmpo)


def test_max_length_sweep_one_pass_per_length(cli, tmp_path):
    _, path = small_sweep(tmp_path, "lengths", {"data.max_length": {"values": [48, 64]}})
    cli("run", str(path))
    storage = tmp_path / "runs"
    notes = trial_notes(storage, "data.max_length")
    assert set(notes) == {"48", "64"} and notes["48"] != notes["64"]
    assert all(note.startswith("on: ") for note in notes.values())
    assert reference_store.count_passes(str(storage / "lengths")) == 2
    (parent,) = runs_by_kind(storage, "study")
    assert parent.data.tags[tracking.TOKENIZATIONS_TAG] == "2"
