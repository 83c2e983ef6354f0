"""Model and tokenizer loading: built-in, local directory, and the offline hub error."""
from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from sweep.models.builtin import builtin_path
from sweep.models.loading import load_causal_lm, load_tokenizer, resolve_model_path

TINY = "builtin:tiny-gpt2"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefsweep-cache")


@pytest.fixture(autouse=True)
def _cache(cache_dir, monkeypatch):
    # One build for the whole module: every test reads it, none modifies it.
    monkeypatch.setenv("PREFSWEEP_CACHE", str(cache_dir))


@pytest.fixture
def local_copy(tmp_path) -> Path:
    """The builtin model saved as an ordinary local HF directory, without a pad token."""
    target = tmp_path / "my-model"
    shutil.copytree(builtin_path(TINY), target)
    tokenizer = load_tokenizer(str(target))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(target)
    return target


def test_resolve_model_path(tmp_path, monkeypatch):
    assert resolve_model_path(TINY) == str(builtin_path(TINY))
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert resolve_model_path("here") == str((tmp_path / "here").resolve())
    monkeypatch.setattr("sweep.models.hub.hub_reason", lambda: None)  # as if the hub answered
    assert resolve_model_path("openai-community/gpt2") == "openai-community/gpt2"
    assert resolve_model_path("gpt2") == "gpt2"
    for missing in ("./nope", str(tmp_path / "nope"), "a/b/c"):
        with pytest.raises(ValueError, match="does not exist"):
            resolve_model_path(missing)
    with pytest.raises(ValueError, match="unknown built-in"):
        resolve_model_path("builtin:nope")


def test_load_builtin():
    tokenizer = load_tokenizer(TINY)
    model = load_causal_lm(TINY)
    assert tokenizer.is_fast and tokenizer.padding_side == "right"
    assert tokenizer.pad_token == "<|pad|>"  # its own pad token is kept, not replaced by EOS
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert model.config.vocab_size == len(tokenizer)


def test_load_local_dir(local_copy):
    tokenizer = load_tokenizer(str(local_copy))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.padding_side == "right"
    model = load_causal_lm(str(local_copy), device="cpu")
    reference = load_causal_lm(TINY)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    batch = tokenizer(["hi", "User: a longer prompt here\nAssistant:"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, -1] == 0  # right padding
    assert torch.isfinite(model(**batch).logits).all()


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", torch.float32), ("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_dtypes(dtype, expected):
    assert load_causal_lm(TINY, dtype=dtype).dtype == expected


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_causal_lm(TINY, dtype="int8")


def test_falls_back_when_sdpa_unsupported(monkeypatch):
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained
    calls = []

    def without_sdpa(path, **kwargs):
        calls.append(kwargs.get("attn_implementation"))
        if kwargs.get("attn_implementation") == "sdpa":
            raise ValueError("X does not support an attention implementation through sdpa yet.")
        return real(path, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", without_sdpa)
    assert load_causal_lm(TINY) is not None
    assert calls == ["sdpa", None]


def test_unreachable_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE at import time, so patch the constant as well:
    # without it a failing hub lookup retries for most of a minute.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    name = "prefsweep-test/no-such-model"
    for load in (load_tokenizer, load_causal_lm):
        with pytest.raises(ValueError) as info:
            load(name)
        message = str(info.value)
        assert name in message and "HF_HUB_OFFLINE is set" in message
        assert "local directory" in message and TINY in message



def test_a_hub_model_fails_at_once_when_offline_and_not_cached(monkeypatch, tmp_path):
    import time

    from sweep.models.loading import ModelLoadError, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    began = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*hf download someone/never-cached"):
        load_tokenizer("someone/never-cached")
    assert time.perf_counter() - began < 5  # no retries


def test_a_hub_data_set_fails_at_once_when_offline(monkeypatch, tmp_path):
    from sweep.config.schema import DataSource
    from sweep.data.formats import DataError
    from sweep.data.sources import read_rows

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match="not in the local cache, and HF_HUB_OFFLINE is set.*--repo-type dataset"):
        read_rows(DataSource(hf="someone/never-cached-data"))
