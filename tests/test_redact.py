"""Secrets never leave in the clear: URL passwords masked wherever a config or an error text is
shown, logged or published (MLflow); the files that must keep them are owner-only."""
from __future__ import annotations

import logging
import stat

import pytest

from sweep.config.redact import MaskingFilter, mask, mask_url, write_private
from sweep.tracking import client_for, create_run, ensure_experiment, set_tags


@pytest.mark.parametrize("given,shown", [
    ("postgresql+psycopg://user:PASSWORD@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
    ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
    ("mysql+pymysql://root:pw@db/optuna", "mysql+pymysql://root:***@db/optuna"),
    ("http://alice:pw@mlflow:5000", "http://alice:***@mlflow:5000"),
    ("postgresql://u@h/db?password=hunter2&sslmode=off", "postgresql://u@h/db?password=***&sslmode=off"),
    ("s3://bucket/runs?access_key=AK&secret_key=SK", "s3://bucket/runs?access_key=***&secret_key=***"),
    ("sqlite:////tmp/runs/optuna.db", "sqlite:////tmp/runs/optuna.db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("a=b and no URL", "a=b and no URL"),
])
def test_mask_url(given, shown):
    assert mask_url(given) == shown


def test_mask_free_text_and_nested_data():
    text = "OperationalError: could not connect (postgresql+psycopg://u:TOPSECRET@db/x)\n  at line 3"
    assert "TOPSECRET" not in mask_url(text) and "u:***@db/x" in mask_url(text)
    data = {"a": ["postgresql://u:TOPSECRET@h/d", 1.5, None], "b": {"c": ("http://x:TOPSECRET@y",)}}
    assert "TOPSECRET" not in repr(mask(data)) and mask(data)["a"][1:] == [1.5, None]


def test_log_records_are_masked(caplog):
    logger = logging.getLogger("prefsweep.test-redact")
    caplog.handler.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("GET /studies?set=storage.optuna_url=%s", "postgresql://u:TOPSECRET@h/d")
        try:
            raise RuntimeError("cannot reach postgresql://u:TOPSECRET@h/d")
        except RuntimeError:
            logger.exception("failed")
    assert "TOPSECRET" not in caplog.text and "u:***@h/d" in caplog.text


def test_private_files(tmp_path):
    target = tmp_path / "sub" / "study.json"
    target.parent.mkdir(mode=0o755)
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["study.json"]  # no temp file left


def test_mlflow_params_and_tags_are_masked(tmp_path):
    from sweep.config.schema import PrefsweepConfig

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = PrefsweepConfig.model_validate({"storage": {"path": str(tmp_path),
                                                      "optuna_url": "postgresql+psycopg://u:TOPSECRET@db/optuna"}})
    experiment = ensure_experiment(cfg, uri)
    run = create_run(uri, experiment, "r", tags={}, params=cfg.model_dump(mode="json"))  # as the driver does
    set_tags(uri, run, {"prefsweep.error": "OperationalError at postgresql+psycopg://u:TOPSECRET@db/optuna"})
    data = client_for(uri).get_run(run).data
    assert data.params["storage.optuna_url"] == "postgresql+psycopg://u:***@db/optuna"
    assert "TOPSECRET" not in repr(data.params) + repr(data.tags)
