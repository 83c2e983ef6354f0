"""One database engine per store URL per process, with a bounded pool.

A new `RDBStorage(url)` per read opens its own engine and pool, runs `create_all` and leaves
its connections to the garbage collector: 40 readers of the REST service gave Postgres "too
many clients" (issue 10). Here every URL gets one engine (the API's studies table) or one
Optuna storage (Optuna's cache of finished trials included) for the life of the process:

- at most POOL_SIZE + MAX_OVERFLOW connections per store; a caller waits POOL_TIMEOUT seconds
  for one and then gets sqlalchemy's TimeoutError (the service answers 503, `unavailable`);
- a store nobody has used for IDLE_RELEASE_S seconds closes its idle connections, so an idle
  service holds none (Postgres' max_connections is shared with every sweep driver and trial).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 4, 4, 5.0
IDLE_RELEASE_S = 5.0

_lock = threading.Lock()
_engines: dict[str, Any] = {}       # url -> Engine
_storages: dict[str, Any] = {}      # url -> optuna storage (cached, over an RDBStorage)
_watched: list[Any] = []            # every engine above, RDBStorage's included
_last_checkout: dict[int, float] = {}  # id(engine) -> time of its last checkout
_reaper: threading.Thread | None = None


def pool_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite") and url.rstrip("/").endswith((":memory:", "sqlite:")):
        return {}  # an in-memory database lives in one connection: SQLAlchemy picks that pool itself
    kwargs: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": POOL_TIMEOUT}
    if url.startswith("sqlite"):
        # Concurrent writers wait on SQLite's file lock, not on "database is locked" at once.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True  # a connection the server closed is replaced, not an error
    if url.startswith("postgresql"):
        # pg_stat_activity then says which process holds a connection (the tests count ours).
        kwargs["connect_args"] = {"application_name": application_name()}
    return kwargs


def application_name() -> str:
    return f"prefsweep-{os.getpid()}"


def engine(url: str, **extra: Any):
    """The process's SQLAlchemy engine for `url`."""
    with _lock:
        if url not in _engines:
            from sqlalchemy import create_engine

            _engines[url] = _watch(create_engine(url, **pool_kwargs(url), **extra))
        return _engines[url]


def optuna_storage(url: str):
    """The process's Optuna storage for `url`: one RDBStorage (one engine) behind Optuna's
    own cache, which keeps finished trials in memory and reads only new or unfinished ones."""
    with _lock:
        if url not in _storages:
            import optuna

            rdb = optuna.storages.RDBStorage(url, engine_kwargs=pool_kwargs(url))
            _watch(rdb.engine)
            _storages[url] = optuna.storages.get_storage(rdb)
        return _storages[url]


def _watch(eng):
    """Track `eng`'s last checkout for the idle release (call with _lock held)."""
    from sqlalchemy import event

    global _reaper
    _watched.append(eng)
    _last_checkout[id(eng)] = time.monotonic()
    event.listen(eng, "checkout", lambda *_: _last_checkout.__setitem__(id(eng), time.monotonic()))
    if _reaper is None:
        _reaper = threading.Thread(target=_release_idle, name="prefsweep-pool-reaper", daemon=True)
        _reaper.start()
    return eng


def _release_idle() -> None:
    from sqlalchemy.pool import QueuePool

    while True:
        time.sleep(1.0)
        with _lock:
            engines = list(_watched)
        now = time.monotonic()
        for eng in engines:
            pool = eng.pool
            if not isinstance(pool, QueuePool):  # e.g. an in-memory SQLite: its one connection is the data
                continue
            idle = now - _last_checkout.get(id(eng), now) > IDLE_RELEASE_S
            if idle and pool.checkedout() == 0 and pool.checkedin() > 0:
                # QueuePool.dispose closes the idle connections and stays usable: the next
                # checkout opens a fresh one.
                pool.dispose()


def store_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says a database could not be reached in time: the
    pool's wait ran out, the server refused a connection (too many clients), it went away."""
    from sqlalchemy import exc as sa

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sa.TimeoutError, sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if getattr(seen, "error_code", None) == "TEMPORARILY_UNAVAILABLE":  # MLflow's wrapper of the above
            return True
        seen = seen.__cause__ or seen.__context__
    return False
