"""A study's run: cancel it, read its Ray job's log."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import schemas
from api.deps import Studies, StudyId
from api.errors import responses
from api.schemas import public

router = APIRouter()


@router.post("/studies/{study_id}/cancel", response_model=schemas.StudyDetail, responses=responses(404, 409))
def cancel(study_id: StudyId, studies: Studies):
    return public(studies.cancel(study_id))


@router.get("/studies/{study_id}/logs", response_model=schemas.Logs, responses=responses(404))
def logs(study_id: StudyId, studies: Studies, lines: Annotated[int, Query(ge=1, le=5000)] = 200):
    return public(studies.logs(study_id, lines))
