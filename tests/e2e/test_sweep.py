"""`prefsweep run` end to end: Optuna storage, MLflow parent/children, champion alias,
status/best/export, the report, the push to the hub up to its network calls, a refused bad
config, and a failing trial that does not sink the sweep."""
from __future__ import annotations

import csv
import json
import re
import subprocess

import pytest
from helpers import BIN, REPO, dashboard_trials, mlflow_client, optuna_trials, runs_by_kind, sweep_args
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.ray

# The demo as shipped (ranked on eval/gen/win_rate against the SFT reference), 100 steps: long
# enough for a too-high learning rate to wreck the model (3e-2: it loses to the reference on
# most prompts) while 5e-5 wins more than half.
# Two trials at a time: one CPU each on the 2-core CI machine, and trial start-up overlaps.
GRID = ["--set", "sweep.method=grid", "--set", "sweep.max_concurrent_trials=2",
        "--set", "train.max_steps=100", "--set", "train.eval_every=50",
        "--set", "train.logging_steps=25", "--set", "sweep.parameters={}",
        "--set", "sweep.parameters.train.learning_rate.values=[5.0e-5, 3.0e-2]",
        "--set", "sweep.parameters.objective.beta.values=[0.1, 0.3]"]


def test_sweep_records_everything_and_exports_the_best(cli, tmp_path, hub):
    storage = tmp_path / "runs"
    cli("run", *sweep_args(storage, "grid", *GRID))

    trials = optuna_trials(storage, "grid")
    assert len(trials) == 4
    # ASHA may stop trials early: Optuna then has them PRUNED, with their last value.
    assert all(t.state.name in ("COMPLETE", "PRUNED") and set(t.params) == {"train.learning_rate", "objective.beta"}
               for t in trials)
    assert {(t.params["train.learning_rate"], t.params["objective.beta"]) for t in trials} == {
        (5e-5, 0.1), (5e-5, 0.3), (3e-2, 0.1), (3e-2, 0.3)}

    (parent,) = runs_by_kind(storage, "study")
    children = runs_by_kind(storage, "trial")
    assert len(children) == 4

    # The three stores point at each other, as optuna-dashboard's own API shows them.
    status = json.loads(cli("status", "grid", "--storage", str(storage), "--json").stdout)
    state_of = {t["trial_id"]: t["state"] for t in status["trials"]}
    run_of = {c.data.tags["prefsweep.trial_id"]: c for c in children}
    for trial in dashboard_trials(storage, "grid"):
        trial_id = trial["user_attrs"]["prefsweep.trial_id"]
        assert trial["user_attrs"]["prefsweep.mlflow_run_id"] == run_of[trial_id].info.run_id
        assert run_of[trial_id].data.tags["prefsweep.optuna_trial"] == str(trial["number"])
        assert trial["state"] == {"stopped": "Pruned", "finished": "Complete"}[state_of[trial_id]], trial
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["prefsweep.trial_id"] for c in children}) == 4
    assert all("eval/rewards/accuracies" in c.data.metrics and "eval/gen/win_rate" in c.data.metrics for c in children)
    assert parent.data.tags["prefsweep.best_trial"] and "best/eval/gen/win_rate" in parent.data.metrics

    champion = mlflow_client(storage).get_model_version_by_alias("grid", "champion")
    assert champion.run_id in {c.info.run_id for c in children}

    assert status["state"] == "finished" and status["progress"] == {"done": 4, "total": 4}
    values = [t["value"] for t in status["trials"]]
    assert status["best"]["params"]["train.learning_rate"] == 5e-5
    assert max(values) - min(values) >= 0.2, values  # a good learning rate clearly beats a bad one

    export = tmp_path / "export"
    cli("best", "grid", "--storage", str(storage), "--export", str(export))
    AutoModelForCausalLM.from_pretrained(export)
    AutoTokenizer.from_pretrained(export)
    card = (export / "README.md").read_text()
    assert "dpo" in card and "train.learning_rate" in card and "eval/rewards/accuracies" in card
    assert "## Sweep" in card and "4 trials" in card

    check_report(cli, storage, tmp_path / "report", parent.info.run_id)
    check_push(cli, storage, tmp_path, hub, status["best"]["trial_id"])


def check_report(cli, storage, out, parent_run_id):
    """`prefsweep report` on the finished study: a CSV row per trial with every swept parameter
    and metric, at least four plots, importances summing to 1, all of it on the parent run."""
    proc = cli("report", "grid", "--storage", str(storage), "--out", str(out))
    assert "parameter importances" in proc.stdout and "reading the step metrics" in proc.stdout  # progress
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4
    filled = ["param.train.learning_rate", "param.objective.beta", "final.eval/gen/win_rate", "best.eval/gen/win_rate",
              "final.eval/gen/kl", "final.eval/rewards/accuracies", "final.loss", "mlflow_run_id", "number", "steps",
              "checkpoint_path", "wall_time_s", "rank", "state"]
    assert {*filled, "stopped_by", "error"} <= set(rows[0])
    assert all(row[column] for row in rows for column in filled), rows
    report = json.loads((out / "report.json").read_text())
    assert abs(sum(report["importances"]["values"].values()) - 1) < 1e-6, report["importances"]
    assert report["observations"] and report["frontier"]["fronts"]["eval/gen/win_rate"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 4 and "reward_vs_kl.png" in pngs and "importances.png" in pngs, pngs
    assert all(f"]({p})" in (out / "report.md").read_text() for p in pngs)
    client = mlflow_client(storage)
    logged = {a.path for a in client.list_artifacts(parent_run_id, "report")}
    assert {f"report/{name}" for name in [*pngs, "report.md", "trials.csv", "report.json"]} == logged
    assert "reward_vs_kl.png" in {a.path for a in client.list_artifacts(parent_run_id)}  # the closing's own


def check_push(cli, storage, tmp_path, hub, champion):
    """Without a token the push stops at once; with one, everything up to huggingface_hub's
    network calls runs on the real export (those calls are recorded: tests/conftest.py)."""
    env = {k: v for k, v in cli.env.items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN_PATH=str(tmp_path / "hf-home" / "token"))
    proc = subprocess.run([str(BIN / "prefsweep"), "best", "grid", "--storage", str(storage), "--push-to-hub",
                           "me/grid-dpo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "set HF_TOKEN or run `hf auth login`" in " ".join(proc.stdout.split())

    from sweep.service.reports import push_best

    pushed = push_best("grid", "me/grid-dpo", "hf_test_token", str(storage), revision="sweep")
    assert pushed["trial_id"] == champion and [c[0] for c in hub.calls] == ["create_repo", "create_branch",
                                                                              "upload_folder"]
    AutoModelForCausalLM.from_pretrained(hub.folder)
    AutoTokenizer.from_pretrained(hub.folder)
    assert "## Sweep" in (hub.folder / "README.md").read_text()


def test_bad_config_is_refused_before_any_trial(cli, tmp_path):
    storage = tmp_path / "runs"
    proc = cli("run", *sweep_args(storage, "bad", "--set", "sweep.parameters.train.per_device_batch_size.values=[4, 0]"),
               check=False)
    assert proc.returncode == 2
    assert "sweep.parameters.train.per_device_batch_size" in proc.stdout
    assert not (storage / "bad").exists()


def test_a_diverging_trial_fails_alone_and_the_sweep_goes_on(cli, tmp_path):
    storage = tmp_path / "runs"
    cli("run", *sweep_args(storage, "nan", "--set", "sweep.method=grid", "--set", "sweep.max_concurrent_trials=2",
                           "--set", "train.max_steps=40",
                           "--set", "train.eval_every=20", "--set", "sweep.early_terminate=null",
                           "--set", "sweep.max_retries=1", "--set", "train.max_grad_norm=null",
                           "--set", "sweep.parameters={}",
                           "--set", "sweep.parameters.train.learning_rate.values=[1.0e+30, 1.0e-3]"))
    status = json.loads(cli("status", "nan", "--storage", str(storage), "--json").stdout)
    states = {t["params"]["train.learning_rate"]: t for t in status["trials"]}
    assert states[1e30]["state"] == "failed" and re.search("loss is (nan|inf)", states[1e30]["error"])
    assert "not retried" in states[1e30]["error"]  # Train's retry ended at once, without training again
    assert states[1e-3]["state"] == "finished" and status["best"]["params"]["train.learning_rate"] == 1e-3
    failed = [c for c in runs_by_kind(storage, "trial") if c.info.status == "FAILED"]
    assert len(failed) == 1 and re.search("loss is (nan|inf)", failed[0].data.tags["prefsweep.error"])
