"""How a temperature becomes HF `generate` arguments: one rule for trial evaluation and the
service's generate route (light: no torch import, the service loads it only to generate)."""
from __future__ import annotations

# Sampling at temperature t divides float32 logits by t; below this they overflow to inf (a
# float64 2e-309 even becomes 0), while greedy decoding is exactly the t -> 0 limit. Shared
# with the service's generate route.
GREEDY_BELOW = 1e-4


def sampling_kwargs(temperature: float, top_p: float) -> dict:
    """HF `generate` arguments for a temperature (greedy below GREEDY_BELOW) and nucleus."""
    if temperature < GREEDY_BELOW:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
