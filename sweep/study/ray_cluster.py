"""Connecting to Ray: an existing cluster when RAY_ADDRESS is set (also inside `ray job
submit`), otherwise a local one started here with its dashboard, which Train-inside-Tune
needs to release stopped trials' workers (ray#54305)."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


class RayUnreachable(ConnectionError):
    """RAY_ADDRESS names a cluster nobody answers for."""


def ray_auth_token(explicit: str | None = None) -> str | None:
    """The Ray cluster token: `explicit`, else $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH
    or ~/.ray/auth_token (where `ray start` / `ray.init` keep it); None without one."""
    if explicit:
        return explicit.strip()
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    return path.read_text().strip() if path.is_file() else None


def token_available() -> bool:
    return ray_auth_token() is not None


def _refused_for_want_of_a_token(exc: BaseException) -> bool:
    while exc is not None:
        if "InvalidAuthToken" in str(exc) or type(exc).__name__ == "AuthenticationError":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _connect(address: str, log_to_driver: bool) -> None:
    """Ray's own rule for an explicit address: no token unless RAY_AUTH_MODE=token says so,
    since a token sent to a cluster that runs without auth leaves its actors dead unstarted,
    silently (a ~/.ray/auth_token that a local `ray.init` created later is enough). Only when
    the cluster refuses us for want of a token, and one is at hand, switch to token mode (as
    `ray start` would) and connect again."""
    import ray

    try:
        ray.init(address=address, log_to_driver=log_to_driver)
        return
    except Exception as exc:  # noqa: BLE001 - Ray wraps the refusal in RuntimeError/ConnectionError
        if "RAY_AUTH_MODE" in os.environ or not token_available() or not _refused_for_want_of_a_token(exc):
            raise
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    log.warning("the Ray cluster at %s wants a token: connecting again with the one at hand "
                "(set RAY_AUTH_MODE=token to skip the refused first try)", address)
    ray.shutdown()
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    ray.init(address=address, log_to_driver=log_to_driver)


def check_reachable(address: str) -> None:
    """A RAY_ADDRESS (host:port of a cluster's GCS) nobody answers on fails in seconds with one
    line, not after minutes of Ray's own retries. `auto`, `ray://` and the like are Ray's."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise RayUnreachable(f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc.strerror or exc}); start it "
                             "(`ray start --head`), correct RAY_ADDRESS, or unset it to run on a local Ray") from None


def init_ray(num_cpus: int | None = None, *, log_to_driver: bool = True) -> None:
    """`log_to_driver=False`: workers' output stays in Ray's logs, off this process's console."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        _connect(address, log_to_driver)
    else:
        # The cluster's own processes find its dashboard (state API) through this variable;
        # without it they look up "the latest cluster" in /tmp/ray/ray_current_cluster, which
        # `ray start` writes and ray.init does not, so it can name another or a dead cluster.
        # Train's placement-group cleaner then fails and ASHA-stopped trials keep their CPUs
        # until the next trial waits forever.
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=port, log_to_driver=log_to_driver)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
