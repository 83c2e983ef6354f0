"""What a config submitted to the service may be and touch.

- The body: JSON, or YAML read with the one policy every config source has
  (`sweep.config.loading.config_mapping`: safe types, no aliases, bounded depth).
- One path rule (`inside_roots`) for every config field that may name something on disk
  (data files and `save_to_disk` directories, `hf` names and model ids that resolve to a
  local directory, reference models): it must resolve, symlinks followed, inside the data
  roots, and is rewritten to its absolute path, since the Ray job runs elsewhere.
- Where studies write (storage, Optuna and MLflow URLs) is the server's choice, not the
  request's; `trust_remote_code` only where the server allows it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweep.config.loading import ConfigError, config_mapping, get_dotted, load_config, set_dotted
from sweep.config.schema import PrefsweepConfig, path_fields
from sweep.service.settings import Settings

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SERVER_KEYS = ("storage.path", "storage.optuna_url", "tracking.mlflow_tracking_uri")


class UnsupportedBody(ValueError):
    """A body in a content type configs do not come in."""


def parse_config_body(raw: bytes, content_type: str) -> dict:
    """The config from a JSON or YAML body (its size and JSON depth are checked before this)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in YAML_TYPES:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([("(body)", f"not valid YAML: {exc}")]) from None
        return config_mapping(text, field="(body)")
    if kind not in ("application/json", ""):
        raise UnsupportedBody("send the config as application/json or application/yaml")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError([("(body)", f"not valid JSON: {first}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the config must be a mapping of sections")])
    return data


def inside_roots(path: str, settings: Settings) -> Path:
    """THE path rule: may a config touch `path`? Returns its absolute, symlink-free form;
    ValueError if it leaves every data root. A relative path is tried against the service's
    workdir, then each data root, never against the job's working directory (which may be
    anywhere): the first candidate that exists inside a root wins."""
    if "://" in path:
        raise ValueError("remote URIs are not accepted through the API; use a path under the data roots")
    try:
        given = Path(path).expanduser()
        bases = [given] if given.is_absolute() else [settings.workdir / given, *(r / given for r in settings.data_roots)]
        candidates = [b.resolve() for b in bases]
    except (ValueError, OSError, RuntimeError) as exc:
        raise ValueError(f"not a usable path: {exc}") from None
    inside = [c for c in candidates if any(c.is_relative_to(root) for root in settings.data_roots)]
    existing = [c for c in inside if c.exists()]
    if existing:
        return existing[0]
    if not inside or any(c.exists() for c in candidates):
        roots = ", ".join(str(r) for r in settings.data_roots)
        raise ValueError(f"path is outside the allowed data roots ({roots})")
    return inside[0]  # inside, but missing: the caller says so


def _means_local(value: str, settings: Settings) -> bool:
    """For fields that take a hub id or a local directory: would the hub libraries read this
    from disk? Path syntax (sweep.models.loading' test), or a directory of that name next to us -
    `datasets`/`transformers` try the local directory first, whatever the id looks like."""
    from sweep.models.loading import looks_like_path

    if looks_like_path(value):
        return True
    try:
        given = Path(value)
        return any((base / given).exists() for base in (settings.workdir, *settings.data_roots))
    except (ValueError, OSError):
        return True  # unusable as a hub id too: let the path rule explain


def local_sources(cfg: PrefsweepConfig, settings: Settings) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Every field that may name something on disk (PrefsweepConfig's LocalPath marks: data
    paths and hub names, model and reference models, and any such field added later), put
    through the one path rule -> ({dotted key: absolute path to write instead}, problems)."""
    from sweep.models.builtin import is_builtin

    dumped = cfg.model_dump(mode="json")
    rewrites: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, marker in path_fields():
        value = get_dotted(dumped, key)
        if not isinstance(value, str) or is_builtin(value):
            continue
        if marker.hub_ok and not _means_local(value, settings):
            continue  # a hub id; the job runs in an empty directory, so it cannot turn local there
        try:
            resolved = inside_roots(value, settings)
        except ValueError as exc:
            problems.append((key, str(exc)))
            continue
        if not resolved.exists():
            problems.append((key, f"no such file or directory: {value}"))
        rewrites[key] = str(resolved)
    return rewrites, problems


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
        given = get_dotted(dumped, key)
        if given not in (get_dotted(defaults, key), server[key]):
            problems.append((key, "set by the server; leave it out (PREFSWEEP_" +
                             key.split(".")[-1].upper() + " on the server decides)"))
    guarded = SERVER_KEYS + tuple(key for key, _ in path_fields()) + ("model.trust_remote_code", "evaluation.judge")
    for key, spec in cfg.sweep.parameters.items():
        if any(g == key or g.startswith(key + ".") for g in guarded):
            if key == "model.trust_remote_code" and (settings.allow_trust_remote_code or not any(spec.edge_values())):
                continue
            problems.append((f"sweep.parameters.{key}", "cannot be swept through the API"))
    if cfg.model.trust_remote_code and not settings.allow_trust_remote_code:
        problems.append(("model.trust_remote_code", "not allowed on this server "
                         "(PREFSWEEP_ALLOW_TRUST_REMOTE_CODE=false)"))
    judge = cfg.evaluation.judge if cfg.evaluation is not None else None
    if judge is not None and judge.python is not None and not settings.allow_python_judges:
        # A python judge imports and runs code named by the request, on the cluster.
        problems.append(("evaluation.judge.python", "not allowed on this server (PREFSWEEP_ALLOW_PYTHON_JUDGES=false)"))
    rewrites, path_problems = local_sources(cfg, settings)
    problems += path_problems
    if problems:
        raise ConfigError(problems, "request")
    for key, value in {**server, **rewrites}.items():
        set_dotted(dumped, key, value)
    return load_config(dumped)
