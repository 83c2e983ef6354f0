"""Failures: the sweep driver killed mid-sweep and resumed; a training worker killed
mid-run and restarted from its checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from helpers import BIN, REPO, optuna_trials, runs_by_kind, sweep_args
from processes import wait_for

from sweep.service.studies import study_status
from sweep.storage.record import load_record
from sweep.study.trials import trial_rows

pytestmark = pytest.mark.ray


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def registered(run_dir: Path) -> list[str]:
    """Checkpoints Ray Train has registered in its snapshot, the ones a restart resumes from
    (a checkpoint_* dir can exist on disk a moment before it is registered)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    text = snapshot.read_text() if snapshot.is_file() else ""
    return [d.name for d in run_dir.glob("checkpoint_*") if d.name in text]


def checkpoints(storage: Path, name: str, trial_id: str) -> list[str]:
    run_dir = storage / name / "train" / f"trial-{trial_id}"
    return sorted(p.name for p in run_dir.glob("checkpoint_*"))


def test_killed_driver_resumes_without_rerunning_finished_trials(cli, tmp_path):
    storage, name = tmp_path / "runs", "resume"
    args = sweep_args(storage, name, "--set", "sweep.num_trials=3", "--set", "sweep.method=random",
                      "--set", "sweep.max_concurrent_trials=2", "--set", "train.max_steps=90",
                      "--set", "train.eval_every=30", "--set", "sweep.early_terminate=null")
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([str(BIN / "prefsweep"), "run", *args], cwd=REPO, env=cli.env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def one_finished_one_checkpointed():
            # Finished per Tune's persisted state (what a resume sees), and another trial
            # with a Train checkpoint on disk but not finished: the driver dies between them.
            if not (storage / name / "study.json").exists():
                return None
            rows = trial_rows(load_record(name, str(storage)))
            done = {r.trial_id for r in rows if r.state == "finished"}
            midway = [d.name.removeprefix("trial-") for d in (storage / name / "train").glob("trial-*")
                      if d.name.removeprefix("trial-") not in done and registered(d)]
            return (rows, midway[0]) if done and midway else None

        rows, midway_id = wait_for(one_finished_one_checkpointed, 400, "one finished and one checkpointed trial",
                                   driver, interval=0.5)
        assert study_status(name, str(storage))["state"] == "running"  # its driver beats
    finally:
        kill_group(driver)
    # Killed without a word (the record still says running): its dead process tells.
    assert study_status(name, str(storage))["state"] == "interrupted"
    finished_before = {r.trial_id: checkpoints(storage, name, r.trial_id) for r in rows if r.state == "finished"}

    proc = cli("resume", name, "--storage", str(storage))
    assert "resumed from the checkpoint of step" in proc.stdout + proc.stderr

    status = json.loads(cli("status", name, "--storage", str(storage), "--json").stdout)
    assert status["state"] == "finished"
    assert [t["state"] for t in status["trials"]] == ["finished"] * 3
    for trial_id, before in finished_before.items():
        assert checkpoints(storage, name, trial_id) == before, f"finished trial {trial_id} ran again"
    assert midway_id in {t["trial_id"] for t in status["trials"]}

    children = runs_by_kind(storage, "trial")
    assert sorted(c.data.tags["prefsweep.trial_id"] for c in children) == sorted(
        t["trial_id"] for t in status["trials"])  # one child run per trial, none duplicated
    assert all(c.info.status == "FINISHED" for c in children)
    trials = optuna_trials(storage, name)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)


def test_ctrl_c_leaves_the_study_interrupted_not_finished(cli, tmp_path):
    """Tune ends its loop on SIGINT and returns normally; the study must not then be closed
    as finished (parent run ended, champion registered) with trials missing."""
    storage, name = tmp_path / "runs", "ctrl-c"
    args = sweep_args(storage, name, "--set", "sweep.num_trials=3", "--set", "sweep.method=random",
                      "--set", "train.max_steps=400", "--set", "train.eval_every=100",
                      "--set", "sweep.early_terminate=null")
    driver = subprocess.Popen([str(BIN / "prefsweep"), "run", *args], cwd=REPO, env=cli.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: list((storage / name / "train").glob("trial-*")), 300, "a trial training", driver)
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            kill_group(driver)
    assert driver.returncode == 130, output[-4000:]
    assert f"`prefsweep resume {name}` continues it" in output, output[-3000:]
    record = load_record(name, str(storage))
    assert record.state == "interrupted" and "0/3 trials ended" in record.error
    (parent,) = runs_by_kind(storage, "study")
    assert parent.info.status == "RUNNING" and "prefsweep.best_trial" not in parent.data.tags


def train_workers(cluster_temp: str) -> list[psutil.Process]:
    """Ray Train workers of *this* test cluster: their raylet's command line names its temp
    dir (other clusters may run on the machine, and their workers are not ours to kill)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + (proc.info["name"] or "")
            if "RayTrainWorker" in text and any(
                    cluster_temp in " ".join(parent.cmdline()) for parent in proc.parents()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_killed_worker_restarts_from_its_last_checkpoint(cli, ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    log_path = tmp_path / "train.log"
    log = log_path.open("w")
    train = subprocess.Popen(
        [str(BIN / "prefsweep"), "train", "configs/demo.yaml", "--set", f"storage.path={storage}",
         "--set", "train.max_steps=200", "--set", "train.eval_every=25", "--set", "sweep.max_retries=1"],
        cwd=REPO, env=cli.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: [d for d in storage.glob("demo/*/") if registered(d)], 300, "a first checkpoint", train,
                 interval=0.5)
        (worker,) = wait_for(lambda: train_workers(ray_cluster["temp"]), 30, "the training worker")
        worker.kill()
        assert train.wait(timeout=400) == 0, log_path.read_text()[-4000:]
    finally:
        if train.poll() is None:
            kill_group(train)
    output = log_path.read_text()
    assert "resumed from the checkpoint of step" in output
    (run,) = runs_by_kind(storage, "train")
    assert run.info.status == "FINISHED"
