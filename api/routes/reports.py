"""From the sweep to a decision and to the hub: a study's report (JSON, or its trials as CSV)
and its best trial pushed to the Hugging Face hub (the service functions `prefsweep report`
and `prefsweep best --push-to-hub` call)."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from api import schemas
from api.deps import ServiceSettings, Studies, StudyId
from api.errors import responses
from api.schemas import public
from sweep.service import reports as service
from sweep.study.report import report_csv
from sweep.study.report_insights import DEFAULT_EVALUATOR, EVALUATORS

router = APIRouter()
CSV = {"text/csv": {"schema": {"type": "string"}, "example": "rank,number,trial_id,state,...\n"}}


@router.get("/studies/{study_id}/report", response_model=schemas.Report, responses={
    **responses(404), 200: {"description": "The report as JSON, or with `format=csv` one CSV row per trial "
                                           "(the JSON's `columns`).", "content": CSV}})
def get_report(study_id: StudyId, studies: Studies, output: Annotated[Literal["json", "csv"], Query(
        alias="format", description="json: the whole report; csv: every trial, one row each")] = "json",
        importance: Annotated[Literal[tuple(EVALUATORS)], Query(  # type: ignore[valid-type]
            description="Optuna's importance evaluator")] = DEFAULT_EVALUATOR):
    study = studies.get(study_id)
    try:
        data = public(service.study_report(study.name, studies.storage, evaluator=importance).data)
    except FileNotFoundError as exc:  # the record went between the index and now
        raise HTTPException(404, str(exc)) from None
    if output == "csv":
        return Response(report_csv(data), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{study.name}-trials.csv"'})
    return data


@router.post("/studies/{study_id}/best", response_model=schemas.Pushed, responses=responses(400, 403, 404, 502))
def push_best(study_id: StudyId, body: schemas.PushToHub, studies: Studies, settings: ServiceSettings):
    study = studies.get(study_id)
    try:
        pushed = service.push_for_service(settings, study.name, body.repo_id, private=body.private,
                                          revision=body.revision)
    except (LookupError, FileNotFoundError) as exc:  # no usable trial yet, or the record went
        raise HTTPException(404, str(exc)) from None
    return public(pushed)
