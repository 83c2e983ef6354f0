"""One engine per store URL per process, bounded, and idle connections given back."""
from __future__ import annotations

import time

import optuna
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from sweep.storage import databases as stores


def test_one_engine_and_one_optuna_storage_per_url(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert stores.optuna_storage(url) is stores.optuna_storage(url)
    assert stores.engine(f"sqlite:///{tmp_path}/a.db") is stores.engine(f"sqlite:///{tmp_path}/a.db")
    study = optuna.create_study(study_name="s", storage=stores.optuna_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    # another process's writes are seen (Optuna's cache re-reads new and unfinished trials)
    optuna.load_study(study_name="s", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=stores.optuna_storage(url)).trials) == 5


def test_pool_is_bounded_and_waits_then_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "POOL_TIMEOUT", 0.3)
    eng = stores.engine(f"sqlite:///{tmp_path}/bounded.db")
    held = [eng.connect() for _ in range(stores.POOL_SIZE + stores.MAX_OVERFLOW)]
    try:
        started = time.monotonic()
        with pytest.raises(sa_exc.TimeoutError):
            eng.connect()
        assert time.monotonic() - started >= 0.25
    finally:
        for conn in held:
            conn.close()
    with eng.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1


def test_idle_connections_are_given_back(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "IDLE_RELEASE_S", 0.5)
    eng = stores.engine(f"sqlite:///{tmp_path}/idle.db")
    for _ in range(3):
        with eng.connect() as conn:
            conn.execute(text("select 1"))
    assert eng.pool.checkedin() >= 1
    deadline = time.monotonic() + 10
    while eng.pool.checkedin() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert eng.pool.checkedin() == 0
    with eng.connect() as conn:  # and the pool still works
        assert conn.execute(text("select 2")).scalar() == 2
