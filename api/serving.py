"""Text generation from a study's best checkpoint.

The best trial is looked up on every request (cheap: Tune's experiment state); its
checkpoint is exported once in Hugging Face layout under data_dir/exports (LoRA adapters
merged, remote storage fetched) and the model kept loaded, least recently used first out.
A new best trial means a new export and a reload.
"""
from __future__ import annotations

import hashlib
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

from sweep.evaluation.sampling import GREEDY_BELOW, sampling_kwargs
from sweep.service.settings import Settings


@dataclass
class Loaded:
    key: str
    trial_id: str
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class GenerationParams:
    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95




class GenerateIn(BaseModel):
    """The body of generate: strict. Unknown keys, booleans or strings for numbers, NaN and
    infinities are refused (422), and so is text that is not valid Unicode (a lone surrogate:
    pydantic's own string check)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    prompt: StrictStr = Field(min_length=1, max_length=2000)
    max_new_tokens: StrictInt = Field(64, ge=1, le=256)
    temperature: StrictFloat = Field(0.8, ge=0.0, le=2.0,
                                     description=f"0 = greedy; under {GREEDY_BELOW:g} greedy too (the limit)")
    top_p: StrictFloat = Field(0.95, gt=0.0, le=1.0)

    @classmethod
    def bounded(cls, settings: Settings) -> type[GenerateIn]:
        """This model with the server's limits (PREFSWEEP_MAX_PROMPT_CHARS, _MAX_NEW_TOKENS)."""
        return create_model(
            "GenerateIn", __base__=cls,
            prompt=(StrictStr, Field(min_length=1, max_length=settings.max_prompt_chars)),
            max_new_tokens=(StrictInt, Field(64, ge=1, le=settings.max_new_tokens)))


class NoCheckpoint(LookupError):
    pass


class Generator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def cached(self) -> dict[str, str]:
        return {name: m.trial_id for name, m in self._models.items()}

    def model_for(self, name: str) -> Loaded:
        from sweep.service.studies import best_trial

        try:
            record, best = best_trial(name, self.settings.storage_path)
        except (LookupError, FileNotFoundError) as exc:
            raise NoCheckpoint(f"no checkpoint to serve yet: {exc}") from None
        key = f"{best['trial_id']}:{best['checkpoint_path']}"
        with self._lock:
            loaded = self._models.get(name)
            if loaded is not None and loaded.key == key:
                self._models.move_to_end(name)
                return loaded
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # one load per study at a time; others wait and reuse it
            with self._lock:
                loaded = self._models.get(name)
                if loaded is not None and loaded.key == key:
                    return loaded
            loaded = self._load(name, key, record, best)
            with self._lock:
                self._models[name] = loaded
                self._models.move_to_end(name)
                while len(self._models) > self.settings.max_cached_models:
                    self._models.popitem(last=False)
            return loaded

    def _load(self, name: str, key: str, record, best: dict[str, Any]) -> Loaded:
        from sweep.config.loading import config_with
        from sweep.models.loading import load_causal_lm, load_tokenizer
        from sweep.study.export import export_checkpoint

        cfg = config_with(record.cfg, best["params"])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        target = self.settings.exports_dir / name / f"{best['trial_id']}-{digest}"
        if not (target / "config.json").is_file():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            export_checkpoint(best["checkpoint_path"], partial, cfg, best["metrics"])
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            for old in target.parent.iterdir():  # earlier bests of this study
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        trust = cfg.model.trust_remote_code and self.settings.allow_trust_remote_code
        model = load_causal_lm(str(target), trust_remote_code=trust)
        tokenizer = load_tokenizer(str(target), trust_remote_code=trust)
        return Loaded(key=key, trial_id=best["trial_id"], model=model.eval(), tokenizer=tokenizer)

    def _inputs(self, loaded: Loaded, params: GenerationParams):
        ids = loaded.tokenizer(params.prompt, return_tensors="pt")["input_ids"]
        context = getattr(loaded.model.config, "n_positions", None) or getattr(
            loaded.model.config, "max_position_embeddings", None) or 2048
        keep = max(1, context - params.max_new_tokens)
        return ids[:, -keep:]  # long prompts keep their end, like training's left truncation

    def _kwargs(self, loaded: Loaded, params: GenerationParams, ids) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {
            "input_ids": ids, "attention_mask": torch.ones_like(ids),
            "max_new_tokens": params.max_new_tokens, "pad_token_id": loaded.tokenizer.pad_token_id,
        }
        return {**kwargs, **sampling_kwargs(params.temperature, params.top_p)}

    def generate(self, name: str, params: GenerationParams) -> dict[str, Any]:
        import torch

        loaded = self.model_for(name)
        ids = self._inputs(loaded, params)
        with loaded.lock, torch.inference_mode():
            out = loaded.model.generate(**self._kwargs(loaded, params, ids))
        new = out[0, ids.shape[1]:]
        return {"text": loaded.tokenizer.decode(new, skip_special_tokens=True), "trial_id": loaded.trial_id,
                "prompt_tokens": int(ids.shape[1]), "new_tokens": int(new.shape[0])}

    def stream(self, name: str, params: GenerationParams) -> tuple[str, Iterator[str]]:
        """(trial id, iterator of text pieces) - the model is loaded before this returns, so
        errors surface as HTTP statuses, not mid-stream."""
        import torch
        from transformers import TextIteratorStreamer

        loaded = self.model_for(name)
        ids = self._inputs(loaded, params)
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=120)

        def run() -> None:
            with loaded.lock, torch.inference_mode():
                loaded.model.generate(**self._kwargs(loaded, params, ids), streamer=streamer)

        threading.Thread(target=run, daemon=True, name=f"generate-{name}").start()
        return loaded.trial_id, iter(streamer)
