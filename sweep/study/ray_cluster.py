"""Connecting to Ray: an existing cluster when RAY_ADDRESS is set (also inside `ray job
submit`), otherwise a local one started here with its dashboard, which Train-inside-Tune
needs to release stopped trials' workers (ray#54305)."""
from __future__ import annotations

import os
import socket
from pathlib import Path


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


def use_token_auth_if_available() -> None:
    """Ray 2.59+ clusters check a token, but a client that imported ray before RAY_AUTH_MODE
    was set sends none (ray caches its config at import) and is refused. Where a token is at
    hand and the user chose no mode, switch this process to token mode the way `ray start`
    does; an explicit RAY_AUTH_MODE is left alone."""
    if "RAY_AUTH_MODE" in os.environ or not token_available():
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth: nothing to send
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


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
        use_token_auth_if_available()
        ray.init(address=address, log_to_driver=log_to_driver)
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
