"""The training loop evaluates generations at its evaluations, and a judge that breaks fails
the run once, with its name, not on every retry."""
from __future__ import annotations

import pytest
from worker_harness import run_worker, tiny_config, tiny_data

from sweep.engine import loop as worker
from sweep.engine.loop import DIVERGED_FILE

GEN = {"prompts": 4, "max_new_tokens": 6, "judge": "builtin:demo", "batch_size": 2}


def test_every_evaluation_reports_generation_metrics_when_asked(monkeypatch, tmp_path):
    reports = run_worker(tiny_config(evaluation={**GEN, "every": "eval"}), tiny_data(), monkeypatch, tmp_path)
    assert [r["step"] for r in reports] == [2, 4]
    for report in reports:
        assert {"eval/gen/kl", "eval/gen/win_rate", "eval/gen/reward", "eval/gen/length", "eval/gen/eos_rate"} <= set(report)
        assert 0.0 <= report["eval/gen/win_rate"] <= 1.0


def test_final_only_by_default(monkeypatch, tmp_path):
    reports = run_worker(tiny_config(evaluation=GEN), tiny_data(), monkeypatch, tmp_path)
    assert ["eval/gen/kl" in r for r in reports] == [False, True]


def test_a_broken_judge_fails_the_run_with_its_name_and_is_not_retried(monkeypatch, tmp_path):
    cfg, run_dir = tiny_config(evaluation={**GEN, "judge": {"python": "judge_examples:broken"}}), tmp_path / "run"
    with pytest.raises(Exception, match="judge python:judge_examples:broken raised KeyError"):
        run_worker(cfg, tiny_data(), monkeypatch, tmp_path, run_dir=str(run_dir))
    assert "judge python:judge_examples:broken" in (run_dir / DIVERGED_FILE).read_text()

    def no_model(*_, **__):
        raise AssertionError("a later attempt loaded the model")

    monkeypatch.setattr(worker, "build_policy_and_reference", no_model)
    with pytest.raises(Exception, match="recorded by an earlier attempt; not retried"):
        run_worker(cfg, tiny_data(), monkeypatch, tmp_path, run_dir=str(run_dir))
