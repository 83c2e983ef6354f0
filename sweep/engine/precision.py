"""Mixed precision per device and dtype: bf16 (or fp16) autocast on CUDA, float32 on CPU."""
from __future__ import annotations

import torch

from sweep.config.schema import PrefsweepConfig


def autocast_context(cfg: PrefsweepConfig, device: torch.device):
    if device.type == "cuda" and cfg.model.dtype in ("auto", "bfloat16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and cfg.model.dtype == "float16":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)
