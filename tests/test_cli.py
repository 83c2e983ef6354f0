"""The CLI's validate verb and its exit codes: config errors (2) name the field, data
errors (1) name the file, row and column."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sweep.cli.main import main

PAIR = {"prompt": "Question: hi?\nAnswer:", "chosen": " hello", "rejected": " go away"}


def config_file(tmp_path: Path, rows: list[dict], **overrides) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {"name": "clitest", "data": {"train": {"path": str(data)}, "eval": None, "eval_fraction": 0.25,
                                       "max_length": 64, "max_prompt_length": 32},
           "storage": {"path": str(tmp_path / "runs")}, **overrides}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_prints_a_summary(tmp_path, capsys):
    assert main(["validate", str(config_file(tmp_path, [PAIR] * 8))]) == 0
    out = capsys.readouterr().out
    assert "config and data OK" in out and "paired" in out


def test_validate_names_file_row_and_column_of_a_missing_column(tmp_path, capsys):
    rows = [PAIR, PAIR, {"prompt": "q", "chosen": "a"}, PAIR]
    path = config_file(tmp_path, rows)
    assert main(["validate", str(path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "pairs.jsonl" in out and "row 2" in out and "'rejected'" in out


def test_validate_names_file_row_and_column_of_an_empty_chosen(tmp_path, capsys):
    rows = [PAIR, {**PAIR, "chosen": "   "}, PAIR, PAIR]
    assert main(["validate", str(config_file(tmp_path, rows))]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "pairs.jsonl" in out and "row 1" in out and "'chosen'" in out
    assert "the only invalid row; data.drop_invalid: true drops it" in out  # the remedy, for one bad row too


def test_drop_invalid_counts_instead_of_failing(tmp_path, capsys):
    rows = [PAIR, {**PAIR, "chosen": ""}, PAIR, PAIR, PAIR]
    path = config_file(tmp_path, rows, data=None)
    raw = yaml.safe_load(path.read_text())
    raw["data"] = {"train": {"path": str(tmp_path / "pairs.jsonl")}, "eval": None, "eval_fraction": 0.25,
                   "drop_invalid": True, "max_length": 64, "max_prompt_length": 32}
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 0
    assert "dropped" in capsys.readouterr().out


def test_config_errors_exit_2_and_name_the_field(tmp_path, capsys):
    path = config_file(tmp_path, [PAIR] * 4)
    assert main(["validate", str(path), "--set", "train.learning_rate=-1"]) == 2
    assert "train.learning_rate" in capsys.readouterr().out


def test_the_installed_command_exits_nonzero_on_bad_data(tmp_path):
    path = config_file(tmp_path, [PAIR, {**PAIR, "chosen": ""}, PAIR, PAIR])
    proc = subprocess.run([sys.executable, "-m", "sweep", "validate", str(path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 1
    assert "pairs.jsonl: row 1, column 'chosen'" in proc.stdout


def test_grid_over_a_distribution_is_refused_by_validate_and_run_before_anything_is_written(tmp_path, capsys):
    path = config_file(tmp_path, [PAIR] * 8)  # default parameters: learning_rate is log_uniform_values
    for verb in ("validate", "run"):
        assert main([verb, str(path), "--set", "sweep.method=grid"]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "sweep.parameters.train.learning_rate" in out and "grid" in out, out
    assert not (tmp_path / "runs").exists()


def test_an_error_after_the_study_record_leaves_it_failed_and_status_shows_it(tmp_path, capsys):
    from sweep.config.schema import PrefsweepConfig
    from sweep.storage.record import StudyRecord, load_record
    from sweep.study.driver import _fails_study

    cfg = PrefsweepConfig(name="early", storage={"path": str(tmp_path / "runs")})
    record = StudyRecord(name="early", config=cfg.model_dump(mode="json"), tracking_uri="sqlite:///x.db",
                         experiment_id="0", parent_run_id="p", optuna_url="sqlite:///o.db")
    record.save(cfg.resolved_storage())
    try:
        with _fails_study(record):
            raise RuntimeError("the reference model failed to load")
    except RuntimeError:
        pass
    saved = load_record("early", str(tmp_path / "runs"))
    assert saved.state == "failed" and "failed to load" in saved.error
    assert main(["status", "early", "--storage", str(tmp_path / "runs")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "early: failed" in out and "the reference model failed to load" in out


def test_the_demo_data_is_built_in_and_validates_from_any_directory(tmp_path):
    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    proc = subprocess.run([sys.executable, "-m", "sweep", "validate", str(config)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "builtin:demo/train" in proc.stdout and "config and data OK" in proc.stdout


def test_an_unknown_built_in_data_set_names_the_known_ones(tmp_path, capsys):
    path = config_file(tmp_path, [PAIR] * 4)
    assert main(["validate", str(path), "--set", "data.train.path=builtin:demo/nope"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "builtin:demo/nope" in out and "builtin:demo/train" in out


def saved_record(tmp_path, name: str, state: str):
    from sweep.config.schema import PrefsweepConfig
    from sweep.storage.record import StudyRecord

    cfg = PrefsweepConfig(name=name, storage={"path": str(tmp_path / "runs")})
    record = StudyRecord(name=name, config=cfg.model_dump(mode="json"), tracking_uri="sqlite:///m.db",
                         experiment_id="0", parent_run_id="p", optuna_url="sqlite:///o.db", state=state)
    record.save(cfg.resolved_storage())
    return record


def test_unknown_study_and_study_without_a_best_are_one_line_each(tmp_path, capsys):
    storage = str(tmp_path / "runs")
    for verb in ("status", "best", "resume"):
        assert main([verb, "nope", "--storage", storage]) == 1
        out = capsys.readouterr().out
        assert "no study 'nope'" in out and "Traceback" not in out, out
    saved_record(tmp_path, "empty", "failed")
    assert main(["best", "empty", "--storage", storage]) == 1
    assert "no trial reported eval/rewards/accuracies with a checkpoint" in " ".join(capsys.readouterr().out.split())


def test_resume_of_a_finished_study_says_there_is_nothing_to_resume(tmp_path, capsys):
    saved_record(tmp_path, "done", "finished")
    assert main(["resume", "done", "--storage", str(tmp_path / "runs")]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_next_steps_name_this_study_and_mask_passwords(capsys):
    from sweep.cli.study_verbs import print_next_steps

    status = {"mlflow": {"tracking_uri": "sqlite:////abs/runs/mlflow.db", "experiment_id": "3"},
              "optuna": {"url": "postgresql+psycopg://sweeper:s3cret@db:5432/optuna"}}
    print_next_steps("demo", "/abs/runs", status)
    out = " ".join(capsys.readouterr().out.split())
    assert "prefsweep best demo --storage /abs/runs --export /abs/runs/demo/best" in out
    assert "PREFSWEEP_STORAGE_PATH=/abs/runs prefsweep serve" in out
    assert "mlflow ui --backend-store-uri sqlite:////abs/runs/mlflow.db" in out
    assert "optuna-dashboard postgresql+psycopg://sweeper:***@db:5432/optuna" in out and "s3cret" not in out


def test_the_trial_table_folds_long_names_instead_of_cutting_them(capsys, monkeypatch):
    from sweep.cli import output

    monkeypatch.setattr(output, "console", output.Console(width=60, force_terminal=False))
    status = {"name": "demo", "state": "finished", "progress": {"done": 1, "total": 1},
              "metric": {"name": "eval/rewards/accuracies"},
              "trials": [{"trial_id": "a1", "state": "finished", "value": 0.94, "evaluations": 3,
                          "expected_evaluations": 3, "params": {"train.learning_rate": 8.3e-5,
                                                                "train.per_device_batch_size": 8}, "error": None,
                          "metrics": {"eval/rewards/accuracies": 0.94}}]}
    output.print_trials(status)
    out = capsys.readouterr().out
    assert "…" not in out  # rich's default cut headers to "eval/rew…" on an 80-column console


def test_the_trial_table_shows_every_objective_the_front_and_the_champion(capsys, monkeypatch):
    from sweep.cli import output

    monkeypatch.setattr(output, "console", output.Console(width=200, force_terminal=False))
    trial = {"state": "finished", "value": None, "evaluations": 1, "expected_evaluations": 1, "params": {}, "error": None}
    status = {"name": "pareto", "state": "finished", "progress": {"done": 2, "total": 2},
              "metric": {"name": "eval/gen/win_rate"}, "best": {"trial_id": "b"}, "pareto_front": ["a", "b"],
              "objectives": [{"name": "eval/gen/win_rate", "goal": "maximize"}, {"name": "eval/gen/kl", "goal": "minimize"}],
              "trials": [{**trial, "trial_id": "a", "metrics": {"eval/gen/win_rate": 0.71, "eval/gen/kl": 3.5}},
                         {**trial, "trial_id": "b", "metrics": {"eval/gen/win_rate": 0.62, "eval/gen/kl": 0.4}}]}
    output.print_trials(status)
    out = capsys.readouterr().out
    assert "Pareto front marked" in out and "a (front)" in out and "b (champion, front)" in out
    assert "0.71" in out and "3.5" in out and "0.4" in out


def test_a_ray_address_nobody_answers_on_is_one_line_in_seconds(tmp_path, capsys, monkeypatch):
    """Ray itself retries a dead RAY_ADDRESS for minutes, printing a warning every few seconds."""
    import time

    from sweep.study.ray_cluster import free_port

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert main(["run", str(config_file(tmp_path, [PAIR] * 8)), "--set", f"storage.path={tmp_path / 'runs'}"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "no Ray cluster answers there" in out and "Traceback" not in out and time.monotonic() - started < 60


def test_cache_ls_and_rm(tmp_path, capsys):
    """`prefsweep cache ls|rm` over a storage's shared reference entries: listed with the study
    that used each, removed by key prefix, by --all, refused for a key that names none."""
    from worker_harness import cache_entry, tiny_config, tiny_data

    storage = tmp_path / "runs"
    first, _, _ = cache_entry(tiny_config(), tiny_data(), storage)
    cache_entry(tiny_config(data={"max_length": 40}), tiny_data(), storage)
    assert main(["cache", "ls", "--storage", str(storage), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2 and {e["used_by"][0] for e in listed} == {"unit"}
    assert main(["cache", "ls", "--storage", str(storage)]) == 0
    assert "2 entries" in capsys.readouterr().out
    key = first.rsplit("/", 1)[1]
    assert main(["cache", "rm", key[:8], "--storage", str(storage)]) == 0
    assert key in capsys.readouterr().out
    assert main(["cache", "rm", key[:8], "--storage", str(storage)]) == 1  # gone now
    assert "names no entry" in capsys.readouterr().out
    assert main(["cache", "rm", "--storage", str(storage)]) == 2  # nothing said: nothing removed
    assert main(["cache", "rm", "--unused-days", "1", "--storage", str(storage)]) == 0  # used just now: kept
    assert "removed 0 entries" in capsys.readouterr().out
    assert main(["cache", "rm", "--all", "--storage", str(storage)]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert main(["cache", "ls", "--storage", str(storage), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
