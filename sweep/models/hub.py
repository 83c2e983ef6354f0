"""Whether the Hugging Face hub can be used from here, decided in at most a few seconds.

Offline (HF_HUB_OFFLINE, or the hub's host not answering), a hub id that is not in the local
cache fails at once with what to do, instead of after the client libraries' retries (about a
minute on a machine without a network). Local directories and built-in models never ask."""
from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

PROBE_SECONDS = 3.0


class HubUnavailable(OSError):
    """A hub id is needed, the hub cannot be reached and the local cache does not have it."""


def offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def _hub_answers() -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def hub_reason() -> str | None:
    """None when the hub can be asked; else why not, in words for an error message."""
    if offline_by_setting():
        return "HF_HUB_OFFLINE is set"
    if not _hub_answers():
        from huggingface_hub import constants

        return f"{constants.ENDPOINT} does not answer from this machine (no network?)"
    return None


def model_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def dataset_cached(repo_id: str) -> bool:
    """Whether `datasets` has this hub data set in its cache (it then loads without the hub)."""
    from datasets import config

    return any(Path(config.HF_DATASETS_CACHE).glob(f"{repo_id.replace('/', '___')}*")) or \
        any(Path(config.HF_CACHE_HOME, "hub").glob(f"datasets--{repo_id.replace('/', '--')}"))


def require_hub(what: str, name: str, *, cached: bool, download: str = "") -> None:
    """Raise HubUnavailable for a hub `name` that is neither cached nor reachable."""
    if cached:
        return
    reason = hub_reason()
    if reason is not None:
        raise HubUnavailable(
            f"{what} {name!r} is a Hugging Face hub name, not in the local cache, and {reason}: download it "
            f"where the hub is reachable (`hf download {name}{download}`) into the HF cache, or use a local "
            "directory")
