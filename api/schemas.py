"""Response bodies of the REST API (they are its OpenAPI schema, checked by schemathesis)."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from sweep.config.redact import mask
from sweep.service.index import STATES

StudyState = Literal[STATES]  # type: ignore[valid-type]
_HUB_NAME = r"[A-Za-z0-9_](?:[-.]?[A-Za-z0-9_])*"  # the hub's names: no leading/trailing/doubled - or .
REPO_ID = rf"^(?:{_HUB_NAME}/)?{_HUB_NAME}$"
BRANCH = r"^[A-Za-z0-9_](?:[-./]?[A-Za-z0-9_])*$"


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


class ReportTrial(BaseModel):
    rank: int | None = Field(description="1 = best by the sweep metric; null without a value.")
    number: int = Field(description="Optuna trial number.")
    trial_id: str | None = Field(description="Ray Tune trial id (MLflow tag prefsweep.trial_id).")
    state: str
    stopped_by: str | None = Field(description="asha (early termination), failure or interrupted; null: ran to the end "
                                   "or still runs.")
    params: dict[str, Any]
    value: float | None = Field(description="Final value of the sweep metric.")
    final: dict[str, float | None] = Field(description="Each metric at the trial's last report.")
    best: dict[str, float | None] = Field(description="Best value over the run, for metrics with a direction.")
    steps: int | None
    max_steps: int | None
    wall_time_s: float | None
    mlflow_run_id: str | None
    checkpoint_path: str | None
    error: str | None


class Importances(BaseModel):
    metric: str
    evaluator: str = Field(description="Optuna's importance evaluator (fanova, mean_decrease_impurity, ped_anova).")
    trials: int = Field(description="Trials with a value the importances were computed from.")
    values: dict[str, float] = Field(description="Parameter -> importance, largest first; sums to 1, or empty.")
    note: str | None = Field(description="Why there are none, or what to make of them.")


class FrontierPoint(BaseModel):
    trial_id: str
    state: str
    values: dict[str, float | None]


class Frontier(BaseModel):
    x: str = Field(description="eval/gen/kl")
    ys: list[str] = Field(description="eval/gen/reward and/or eval/gen/win_rate")
    points: list[FrontierPoint]
    reference: dict[str, float] = Field(description="y of the reference model itself (at KL 0), where known.")
    fronts: dict[str, list[str]] = Field(description="Per y: the Pareto front's trial ids (y up, KL down).")
    champion: str | None


class Report(BaseModel):
    study: str
    state: str
    generated_at: str
    metric: Metric
    objectives: list[Metric]
    champion: str | None = Field(description="Trial id of the champion (sweep.champion, else the sweep metric).")
    pareto_front: list[str] = Field(description="Trial ids on the Pareto front of sweep.metrics (multi-objective).")
    columns: list[str] = Field(description="The CSV's columns (?format=csv).")
    trials: list[ReportTrial]
    importances: Importances
    observations: list[str] = Field(description="Where the best trials' parameter values lie, in sentences.")
    frontier: Frontier | None = Field(description="Reward/win rate vs KL, when trials evaluated generations.")


class PushToHub(BaseModel):
    """The body of POST /studies/{id}/best. The token is the service's (PREFSWEEP_HF_TOKEN), never the request's."""

    model_config = ConfigDict(extra="forbid")
    repo_id: StrictStr = Field(max_length=96, pattern=REPO_ID, description="NAMESPACE/NAME (or NAME: the token's user).")
    private: StrictBool = Field(False, description="Create the repo private (an existing repo keeps its visibility).")
    revision: StrictStr | None = Field(None, max_length=100, pattern=BRANCH, description="Branch to push to (made if new).")

    @field_validator("repo_id")
    @classmethod
    def _hub_rules(cls, value: str) -> str:
        if value.endswith(".git"):  # the one hub rule a JSON-schema pattern here does not say
            raise ValueError("a repo id cannot end with .git")
        return value


class Pushed(BaseModel):
    repo_id: str
    revision: str
    private: bool
    trial_id: str
    commit_url: str | None


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
