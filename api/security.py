"""Who may call what, and what a submitted config may touch.

- Bearer token on mutating routes and generation, compared in constant time.
- A config's local files (data paths, local model directories) must resolve, symlinks
  followed, inside the allowed data roots; they are rewritten to absolute paths, since the
  Ray job runs in another working directory.
- Where studies write (storage, Optuna and MLflow URLs) is the server's choice, not the
  request's; `trust_remote_code` only where the server allows it.
"""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from api.settings import Settings
from sweep.config.loading import ConfigError, load_config
from sweep.config.schema import PrefsweepConfig

SERVER_KEYS = ("storage.path", "storage.optuna_url", "tracking.mlflow_tracking_uri")
PATH_KEYS = ("data.train.path", "data.eval.path", "model.name_or_path", "model.ref_name_or_path")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def token_ok(header: str | None, token: str) -> bool:
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


# Declares the scheme in the OpenAPI schema (the Authorize button in /docs); the comparison
# below reads the raw header itself, in constant time.
BEARER = HTTPBearer(auto_error=False, description="The service's PREFSWEEP_API_TOKEN.")


def require_token(request: Request, _declared=Depends(BEARER)) -> None:
    """FastAPI dependency: 401 unless `Authorization: Bearer <PREFSWEEP_API_TOKEN>`."""
    settings: Settings = request.app.state.settings
    if not token_ok(request.headers.get("authorization"), settings.api_token or ""):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def inside_roots(path: str, settings: Settings) -> Path:
    """Absolute, symlink-free path of `path` (relative to workdir); ValueError if it leaves
    every allowed root."""
    if "://" in path:
        raise ValueError("remote URIs are not accepted through the API; use a path under the data roots")
    try:
        candidate = Path(path).expanduser()
        resolved = (candidate if candidate.is_absolute() else settings.workdir / candidate).resolve()
    except (ValueError, OSError, RuntimeError) as exc:
        raise ValueError(f"not a usable path: {exc}") from None
    if not any(resolved.is_relative_to(root) for root in settings.data_roots):
        roots = ", ".join(str(r) for r in settings.data_roots)
        raise ValueError(f"path is outside the allowed data roots ({roots})")
    return resolved


def _local_model(name: str, settings: Settings) -> bool:
    from sweep.models.loading import _looks_like_path

    if name.startswith("builtin:"):
        return False
    try:
        exists = (settings.workdir / Path(name).expanduser()).exists()
    except (ValueError, OSError):
        exists = True  # unusable as a hub id too: let the path check explain
    return exists or _looks_like_path(name)


def prepare_config(data: dict[str, Any], overrides: list[str], settings: Settings) -> PrefsweepConfig:
    """Validate a submitted config (same model as the CLI) and apply the server's policy.
    Raises ConfigError with (field, message) problems -> 422."""
    cfg = load_config(data, overrides)
    dumped = cfg.model_dump(mode="json")
    defaults = PrefsweepConfig().model_dump(mode="json")
    server = {"storage.path": settings.storage_path, "storage.optuna_url": settings.optuna_url,
              "tracking.mlflow_tracking_uri": settings.mlflow_tracking_uri}
    problems: list[tuple[str, str]] = []
    for key in SERVER_KEYS:
        given = _get(dumped, key)
        if given not in (_get(defaults, key), server[key]):
            problems.append((key, "set by the server; leave it out (PREFSWEEP_" +
                             key.split(".")[-1].upper() + " on the server decides)"))
    guarded = SERVER_KEYS + PATH_KEYS + ("model.trust_remote_code",)
    for key, spec in cfg.sweep.parameters.items():
        if any(g == key or g.startswith(key + ".") for g in guarded):
            if key == "model.trust_remote_code" and (settings.allow_trust_remote_code or not any(spec.edge_values())):
                continue
            problems.append((f"sweep.parameters.{key}", "cannot be swept through the API"))
    if cfg.model.trust_remote_code and not settings.allow_trust_remote_code:
        problems.append(("model.trust_remote_code", "not allowed on this server "
                         "(PREFSWEEP_ALLOW_TRUST_REMOTE_CODE=false)"))
    for key in PATH_KEYS:
        value = _get(dumped, key)
        if not isinstance(value, str):
            continue
        if key.startswith("model.") and not _local_model(value, settings):
            continue
        if value.startswith("builtin:"):  # shipped with prefsweep: no file of the server's is read
            continue
        try:
            resolved = inside_roots(value, settings)
        except ValueError as exc:
            problems.append((key, str(exc)))
            continue
        if not resolved.exists():
            problems.append((key, f"no such file or directory: {value}"))
        _set(dumped, key, str(resolved))
    if problems:
        raise ConfigError(problems, "request")
    for key in SERVER_KEYS:
        _set(dumped, key, server[key])
    return load_config(dumped)
