"""What every config section is built from: the strict base model, the path marker, bounds."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Upper bounds on counts: a value past them is a typo or an attack, and some (2**64 steps, a
# seed numpy cannot take) would only fail deep inside a running sweep.
MAX_COUNT = 100_000_000      # steps, evaluations, rows
MAX_BATCH = 65_536           # examples per batch, micro-batches, workers, LoRA rank
MAX_TOKENS = 1_048_576       # sequence lengths
MAX_SEED = 2**32 - 1         # numpy's seed range; torch and Python take it too
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    # allow_inf_nan=False: every float field of every section refuses NaN and +-inf (YAML
    # .nan/.inf, JSON NaN/Infinity), named by its dotted path like any other bad value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LocalPath:
    """Field metadata: the value may name something on this machine's disk; `hub_ok`: or a
    Hugging Face hub id (which the hub libraries also try as a local directory first). The REST
    service applies its one path rule to every field marked so (see `path_fields`)."""

    def __init__(self, hub_ok: bool):
        self.hub_ok = hub_ok
