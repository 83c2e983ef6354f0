"""Judges: score (prompt, completion) pairs, higher is better. Loaded once per study (by the
study's scorer, sweep.evaluation.scorer), never per trial.

Every judge's answer is checked (one finite number per completion), and every failure is a
JudgeError that names the judge: a broken judge fails the trials that need it with a message
that says which judge and why, and the sweep goes on."""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

from sweep.config.evaluation import JudgeConfig


class JudgeError(RuntimeError):
    """A judge could not be loaded, raised, or answered something that is not one score per
    completion. Deterministic: retrying the trial would fail the same way."""


class Judge:
    def __init__(self, label: str, score: Callable[[list[str], list[str]], Sequence], batch_size: int):
        self.label = label
        self._score = score
        self._batch_size = batch_size

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(prompts), self._batch_size):
            p, c = prompts[start:start + self._batch_size], completions[start:start + self._batch_size]
            try:
                answer = self._score(list(p), list(c))
            except Exception as exc:
                raise JudgeError(f"judge {self.label} raised {type(exc).__name__}: {exc}") from exc
            out += _checked(self.label, answer, len(p))
        return out


def _checked(label: str, answer, expected: int) -> list[float]:
    try:
        values = [float(v) for v in answer]
    except (TypeError, ValueError) as exc:
        raise JudgeError(f"judge {label} must return one number per completion; got {type(answer).__name__}") from exc
    if len(values) != expected:
        raise JudgeError(f"judge {label} returned {len(values)} scores for {expected} completions")
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        raise JudgeError(f"judge {label} returned {values[bad]} for completion {bad}: scores must be finite")
    return values


def python_callable(target: str) -> Callable:
    """`module:function` -> the function, or a JudgeError that says what is missing."""
    module_name, _, name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise JudgeError(f"judge python:{target}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); "
                         "it must be importable where trials run (installed, or on PYTHONPATH)") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise JudgeError(f"judge python:{target}: {module_name!r} has no function {name!r}")
    return function


def reward_model_scorer(cfg: JudgeConfig, device="cpu") -> Callable:
    """An AutoModelForSequenceClassification with one label: its logit on (prompt, completion)
    read as a text pair, as the OpenAssistant reward models are trained."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sweep.models.loading import ModelLoadError, resolve_model_path

    try:
        path = resolve_model_path(cfg.reward_model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval().to(device)
    except (OSError, ValueError, ModelLoadError) as exc:
        raise JudgeError(f"judge reward_model:{cfg.reward_model}: cannot load it ({exc})") from exc
    if model.config.num_labels != 1:
        raise JudgeError(f"judge reward_model:{cfg.reward_model} has {model.config.num_labels} labels; "
                         "a reward model has one (its logit is the score)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id

    @torch.no_grad()
    def score(prompts: list[str], completions: list[str]) -> list[float]:
        batch = tokenizer(prompts, completions, padding=True, truncation=True, max_length=cfg.max_length,
                          return_tensors="pt").to(device)
        return model(**batch).logits[:, 0].float().cpu().tolist()

    return score


def load_judge(cfg: JudgeConfig, device="cpu") -> Judge:
    if cfg.builtin == "demo":
        from sweep.evaluation.demo_judge import DemoJudge

        return Judge(cfg.label, DemoJudge().score, cfg.batch_size)
    if cfg.reward_model is not None:
        return Judge(cfg.label, reward_model_scorer(cfg, device), cfg.batch_size)
    return Judge(cfg.label, python_callable(cfg.python), cfg.batch_size)


def check_judge(cfg: JudgeConfig) -> None:
    """Before anything is written or started: a python judge imports and is callable, a reward
    model's config says one label. (A judge that raises when called fails its trials instead.)"""
    if cfg.python is not None:
        python_callable(cfg.python)
    elif cfg.reward_model is not None:
        from transformers import AutoConfig

        from sweep.models.loading import ModelLoadError, resolve_model_path

        try:
            config = AutoConfig.from_pretrained(resolve_model_path(cfg.reward_model))
        except (OSError, ValueError, ModelLoadError) as exc:
            raise JudgeError(f"judge reward_model:{cfg.reward_model}: cannot load it ({exc})") from exc
        if config.num_labels != 1:
            raise JudgeError(f"judge reward_model:{cfg.reward_model} has {config.num_labels} labels; "
                             "a reward model has one (its logit is the score)")
