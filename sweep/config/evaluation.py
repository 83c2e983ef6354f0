"""The `evaluation` section: what each trial's policy generates, and who judges it.

Trials are ranked on what the model says, not only on implicit-reward accuracy (a proxy that
saturates: TRL #1397, LLaMA-Factory #5116). Every evaluation completes the same seeded eval
prompts; the study's reference model completes them once, and a judge scores both."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from sweep.config.fields import MAX_BATCH, MAX_TOKENS, LocalPath, Seed, Strict

BUILTIN_JUDGES = ("builtin:demo",)
GEN_PREFIX = "eval/gen/"
# What each generation metric needs beyond the generations themselves.
GEN_METRICS = {
    "eval/gen/length": None, "eval/gen/eos_rate": None, "eval/gen/kl": None, "eval/gen/length_ratio": None,
    "eval/gen/reward": "judge", "eval/gen/win_rate": "judge",
}


class JudgeConfig(Strict):
    """One of three kinds; in a config `builtin:demo` may be written as the bare string."""
    builtin: Literal["demo"] | None = Field(
        None, description="`demo`: the rules that decided the demo data's preferences (polite opening and "
        "closing, on the prompt's topic, nothing rude or evasive); score = the share met, in [0, 1].")
    reward_model: Annotated[str | None, LocalPath(hub_ok=True)] = Field(
        None, min_length=1, description="Hub id or local dir of an `AutoModelForSequenceClassification` "
        "with one label (its logit is the score, e.g. OpenAssistant's DeBERTa reward models); it reads "
        "(prompt, completion) as a text pair.")
    python: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`module:function` importable where trials run, called as function(prompts, completions) "
        "and returning one finite float per completion (higher is better). The REST service refuses it "
        "unless PREFSWEEP_ALLOW_PYTHON_JUDGES=1: it runs the named code.")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Completions scored per call or forward pass.")
    max_length: int = Field(512, ge=8, le=MAX_TOKENS, description="Tokens of prompt + completion a reward model reads.")

    @model_validator(mode="after")
    def _one_kind(self) -> JudgeConfig:
        kinds = [k for k in ("builtin", "reward_model", "python") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of `builtin`, `reward_model` or `python` "
                             f"(got {', '.join(kinds) or 'none'})")
        return self

    @property
    def label(self) -> str:
        if self.builtin is not None:
            return f"builtin:{self.builtin}"
        if self.reward_model is not None:
            return f"reward_model:{self.reward_model}"
        return f"python:{self.python}"


class EvaluationConfig(Strict):
    prompts: int = Field(32, ge=1, le=4096, description="Eval prompts completed at each evaluation: the first N "
                         "distinct prompts of the eval split in a seeded shuffle, the same for every trial.")
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Tokens generated per completion at most.")
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 (below 1e-4): greedy; otherwise sampled.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling when temperature > 0.")
    every: Literal["final", "eval"] = Field(
        "final", description="`final`: generate at the last evaluation only; `eval`: at every evaluation "
        "(needed when the sweep metric, or the first of `sweep.metrics`, is an eval/gen/ metric).")
    judge: JudgeConfig | None = Field(
        None, description="Scores completions: `builtin:demo` (the demo data's own rules), "
        "`{reward_model: ...}` or `{python: module:function}`; null: no eval/gen/reward or win_rate.")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Prompts generated per batch on a worker.")
    seed: Seed = Field(0, description="Seeds the prompt choice and sampling: same seed, same samples.")
    scorer_gpus: float = Field(
        0.0, ge=0.0, le=8.0, description="GPUs of the study's scorer (the reference model and the judge, "
        "once per study); 0: it runs on CPU, without taking a CPU from the trials. A fraction shares a GPU.")

    @field_validator("judge", mode="before")
    @classmethod
    def _judge_name(cls, value):
        if isinstance(value, str):
            if value not in BUILTIN_JUDGES:
                raise ValueError(f"unknown judge {value!r}: use one of {', '.join(BUILTIN_JUDGES)}, "
                                 "{reward_model: PATH_OR_HUB_ID} or {python: module:function}")
            return {"builtin": value.removeprefix("builtin:")}
        return value

    @field_serializer("judge")
    def _judge_short(self, judge: JudgeConfig | None):
        if judge is not None and judge.builtin is not None and judge.model_fields_set <= {"builtin"}:
            return judge.label  # written back as it is usually written
        return None if judge is None else judge.model_dump(exclude_none=True)

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-4

    def judge_label(self) -> str | None:
        return None if self.judge is None else self.judge.label


def gen_metric_problem(name: str, evaluation: EvaluationConfig | None) -> str | None:
    """Why a sweep cannot rank on metric `name` with this evaluation section, or None."""
    if not name.startswith(GEN_PREFIX):
        return None
    if name not in GEN_METRICS:
        return f"unknown generation metric {name!r}: one of {', '.join(GEN_METRICS)}"
    if evaluation is None:
        return f"{name} needs an `evaluation` section (generations are evaluated only when it is set)"
    if GEN_METRICS[name] == "judge" and evaluation.judge is None:
        return f"{name} needs `evaluation.judge`"
    return None
