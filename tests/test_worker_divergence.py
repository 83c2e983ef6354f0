"""A diverging run stops with a clear error, and Ray Train's later attempts of it end at once
instead of loading the model and diverging again."""
from __future__ import annotations

import pytest
from worker_harness import run_worker, tiny_config, tiny_data

from sweep.engine import loop as worker
from sweep.engine.loop import DIVERGED_FILE

DIVERGING = dict(train={"learning_rate": 1e30, "max_grad_norm": None, "max_steps": 6})


def test_divergence_is_recorded_and_not_retried(monkeypatch, tmp_path):
    cfg, data, run_dir = tiny_config(**DIVERGING), tiny_data(), tmp_path / "run"
    with pytest.raises(Exception, match=r"loss is (nan|inf) at step \d") as first:
        run_worker(cfg, data, monkeypatch, tmp_path, run_dir=str(run_dir))
    assert "earlier attempt" not in str(first.value)
    recorded = (run_dir / DIVERGED_FILE).read_text()
    assert recorded.startswith("loss is") and "learning_rate 1e+30" in recorded

    def no_model(*_, **__):
        raise AssertionError("a later attempt loaded the model")

    monkeypatch.setattr(worker, "build_policy_and_reference", no_model)
    with pytest.raises(Exception, match="recorded by an earlier attempt; not retried") as again:
        run_worker(cfg, data, monkeypatch, tmp_path, run_dir=str(run_dir))
    assert recorded in str(again.value)


def test_a_healthy_run_leaves_no_record(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    reports = run_worker(tiny_config(), tiny_data(), monkeypatch, tmp_path, run_dir=str(run_dir))
    assert reports and not (run_dir / DIVERGED_FILE).exists()
