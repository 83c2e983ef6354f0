"""Generation parameters on the built-in model, without a study or HTTP: the edge values the
API's schema admits must produce text, never a sampling error (a 500)."""
from __future__ import annotations

import pytest
import torch

from api.serving import GenerationParams, Generator, Loaded
from sweep.evaluation.sampling import GREEDY_BELOW
from sweep.models.loading import load_causal_lm, load_tokenizer
from sweep.service.settings import Settings

TINY = "builtin:tiny-gpt2"


@pytest.fixture(scope="module")
def loaded():
    model = load_causal_lm(TINY).eval()
    return Loaded(key="k", trial_id="t", model=model, tokenizer=load_tokenizer(TINY))


def generate(loaded: Loaded, **params) -> list[int]:
    generator = Generator(Settings())
    request = GenerationParams(prompt="Human: name a colour\n\nAssistant:", max_new_tokens=8, **params)
    ids = generator._inputs(loaded, request)
    torch.manual_seed(0)
    with torch.inference_mode():
        out = loaded.model.generate(**generator._kwargs(loaded, request, ids))
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("temperature", [2.2e-309, 1e-30, GREEDY_BELOW / 2])
def test_vanishing_temperature_is_greedy(loaded, temperature):
    assert generate(loaded, temperature=temperature) == generate(loaded, temperature=0.0)


@pytest.mark.parametrize("params", [dict(temperature=GREEDY_BELOW, top_p=5e-324), dict(temperature=2.0, top_p=1.0)])
def test_extreme_sampling_settings_still_sample(loaded, params):
    new = generate(loaded, **params)
    assert len(new) >= 1 and all(0 <= t < loaded.model.config.vocab_size for t in new)
