"""Checkpoints in Hugging Face layout (loadable with `from_pretrained`) plus the optimizer
state a restarted worker needs to continue where it stopped."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "training_state.pt"
INFO_FILE = "prefsweep.json"


def save_checkpoint(directory: Path, model, tokenizer, optimizer, scheduler, cfg, step: int,
                    metrics: dict[str, Any], extra_state: dict[str, Any] | None = None) -> None:
    """`extra_state`: more of the training state a resumed run needs (a moving reference's
    weights), kept in the state file beside the optimizer's, which export leaves out."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            **(extra_state or {}),
        },
        directory / STATE_FILE,
    )
    info = {"step": step, "metrics": metrics, "config": cfg.public(),
            "adapter": bool(cfg.model.lora)}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2, default=float))


def checkpoint_metrics(checkpoint) -> dict[str, Any]:
    """The metrics a `ray.train.Checkpoint` was saved with (its evaluation's report)."""
    with checkpoint.as_directory() as directory:
        path = Path(directory) / INFO_FILE
        return json.loads(path.read_text()).get("metrics", {}) if path.is_file() else {}


def load_training_state(checkpoint, optimizer, scheduler) -> tuple[int, dict[str, Any]]:
    """Restore optimizer, scheduler and RNG from a `ray.train.Checkpoint`; -> (the step reached,
    the rest of the saved state, e.g. the `extra_state` it was saved with)."""
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"]), state
