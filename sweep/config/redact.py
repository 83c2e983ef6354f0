"""What others may see: passwords masked in every URL we show, log or publish, and files that
hold the real ones readable by their owner alone.

Where the real URLs live (a choice; README "Security"): the run-time files a study needs to
reach its databases again - the submitted config (`configs/NAME.yaml`), `NAME/study.json`
(read by `resume`, `status` and the service) and the service's own database - keep them,
written 0600 inside 0700 directories. Passing them through the environment instead would put
them in Ray's job info (`ray job list` shows a job's runtime_env to everyone on the cluster)
and make every later `prefsweep resume` depend on the caller's shell. Everything else - API
responses, log lines, MLflow params, tags and artifacts, exported model cards, checkpoint
metadata - gets the masked form from `mask`.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import traceback
from pathlib import Path
from typing import Any

MASK = "***"
# scheme://user:password@  (SQLAlchemy, MLflow basic auth, s3://key:secret@...), anywhere in a text
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*):(?P<secret>[^@\s'\"]+)@")
# ?password=... and friends: libpq and pyarrow take credentials as query parameters too
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|secret|secret_key|access_key|session_token|"
                    r"token|api_key)=)(?P<secret>[^&\s#'\"]+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A URL with its password masked. Database URLs go through SQLAlchemy's own rendering
    (it knows every dialect's quoting); anything else, and free text that merely contains
    URLs (error messages, log tails), through the patterns above."""
    if "://" in url and not any(c.isspace() for c in url):
        try:
            from sqlalchemy.engine import make_url

            parsed = make_url(url)
        except Exception:  # not an SQLAlchemy URL (http://, s3://, ...): the patterns below
            parsed = None
        if parsed is not None and parsed.password is not None:
            url = parsed.render_as_string(hide_password=True)
    return _QUERY.sub(rf"\g<head>{MASK}", _USERINFO.sub(rf"\g<head>:{MASK}@", url))


def mask(value: Any) -> Any:
    """`value` with every string's URL passwords masked, through dicts, lists and tuples."""
    if isinstance(value, str):
        return mask_url(value) if "://" in value or "=" in value else value
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    return value


class MaskingFilter(logging.Filter):
    """Masks URL passwords in log records (installed on the service's handlers): uvicorn's
    access log alone would print a `set=storage.optuna_url=...` query string verbatim."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:  # formatters keep (and reuse) a traceback text set here
            shown = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_url(shown)
        return True


def install_log_masking(*logger_names: str) -> None:
    """MaskingFilter on every handler of the root logger and of `logger_names`."""
    filt = MaskingFilter()
    for name in ("", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(filt)


def private_dir(path: str | Path) -> Path:
    """Create `path` (and missing parents) as 0700; an existing directory of ours is made 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o700)
    return path


def write_private(path: str | Path, content: str | bytes) -> None:
    """Write `content` to `path` as 0600, atomically (a reader never sees half a file, and an
    older world-readable file is replaced, not reused with its mode)."""
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
