"""Response bodies of the REST API (they are its OpenAPI schema, checked by schemathesis)."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from sweep.config.redact import mask
from sweep.service.index import STATES

StudyState = Literal[STATES]  # type: ignore[valid-type]


def finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def public(value: Any) -> Any:
    """What a route may answer: finite numbers, URL passwords masked (configs, MLflow URIs,
    error texts and log lines carry database URLs)."""
    return finite(mask(value))


class Problem(BaseModel):
    detail: str


class ConfigProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    field: str | None = Field(None, description="What was wrong: a dotted config path, as `prefsweep validate` "
                              "names it (`train.max_steps`), a body field (`temperature`), a parameter (`limit`) "
                              "or `(body)`.")


class ConfigProblems(BaseModel):
    detail: list[ConfigProblem]


class Created(BaseModel):
    id: str = Field(description="Study id; equal to the study name.")
    name: str
    state: StudyState
    submission_id: str | None


class Progress(BaseModel):
    done: int
    total: int


class Metric(BaseModel):
    name: str
    goal: Literal["maximize", "minimize"]


class BestTrial(BaseModel):
    trial_id: str
    state: str
    params: dict[str, Any]
    value: float | None
    evaluations: int
    expected_evaluations: int
    step: int
    checkpoint_path: str | None
    metrics: dict[str, float | None]
    error: str | None = None


class MlflowLink(BaseModel):
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    url: str | None = Field(None, description="Parent run in the MLflow UI, when PREFSWEEP_MLFLOW_UI_URL is set.")


class RayJob(BaseModel):
    submission_id: str | None
    dashboard_url: str | None


class StudySummary(BaseModel):
    id: str
    name: str
    state: StudyState
    owner: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    metric: Metric
    best_value: float | None = Field(description="Best value of the sweep metric so far.")
    progress: Progress | None = None


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    offset: int
    limit: int


class StudyDetail(StudySummary):
    best: BestTrial | None = Field(description="The champion: sweep.champion's choice, else the best by the sweep metric.")
    objectives: list[Metric] = Field(description="The metrics the search optimises (sweep.metrics, or the metric).")
    pareto_front: list[str] = Field(description="Trial ids no other trial beats on every objective (several objectives).")
    mlflow: MlflowLink
    ray: RayJob
    config: dict[str, Any]


class Trial(BaseModel):
    number: int = Field(description="Optuna trial number.")
    trial_id: str | None = Field(description="Ray Tune trial id (MLflow tag prefsweep.trial_id).")
    state: str
    params: dict[str, Any]
    value: float | None
    intermediate_values: list[list[float]] = Field(description="[evaluation, value] pairs from Optuna.")
    evaluations: int
    expected_evaluations: int | None
    step: int | None
    checkpoint_path: str | None
    metrics: dict[str, float | None]
    error: str | None
    started: str | None
    completed: str | None
    curves: dict[str, list[list[float]]] = Field(description="metric -> [step, value] pairs from MLflow.")


class Trials(BaseModel):
    study: str
    metric: Metric
    trials: list[Trial]


class Generation(BaseModel):
    index: int
    prompt: str
    completion: str
    score: float | None
    reference: str
    reference_score: float | None
    log_ratio: float | None


class TrialGenerations(BaseModel):
    trial_id: str
    state: str
    params: dict[str, Any]
    step: int | None
    metrics: dict[str, float | None]
    generations: list[Generation]


class Generations(BaseModel):
    study: str
    evaluation: bool
    judge: str | None
    trials: list[TrialGenerations]


class Logs(BaseModel):
    submission_id: str
    lines: list[str]


class Generated(BaseModel):
    text: str
    trial_id: str
    prompt_tokens: int
    new_tokens: int


class Health(BaseModel):
    """Liveness only: no token needed, so nothing here says where Ray or the databases are."""

    status: Literal["ok"]
    version: str
    database: str = Field(description="Backend of the studies table (sqlite, postgresql).")
