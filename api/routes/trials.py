"""A study's trials and its best trial (the same service functions `prefsweep status` and
`prefsweep best` call)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api import schemas
from api.deps import Studies, StudyId
from api.errors import responses
from api.schemas import public
from sweep.service import studies as service

router = APIRouter()


@router.get("/studies/{study_id}/trials", response_model=schemas.Trials, responses=responses(404))
def get_trials(study_id: StudyId, studies: Studies, curves: Annotated[list[str], Query(
        description="Metrics whose per-step curves to include (none given: the sweep metric and loss; "
                    "`curves=` alone: none)")] = []):  # noqa: B006 (FastAPI copies defaults)
    study = studies.get(study_id)
    metric = study.config["sweep"]["metric"]
    wanted = curves or [metric["name"], "loss"]
    trials = service.study_trials(study.name, studies.storage, curves=[c for c in wanted if c][:20])
    return public({"study": study.id, "metric": metric, "trials": trials})


@router.get("/studies/{study_id}/best", response_model=schemas.BestTrial, responses=responses(404))
def get_best(study_id: StudyId, studies: Studies):
    study = studies.get(study_id)
    try:
        _, best = service.best_trial(study.name, studies.storage)
    except (LookupError, FileNotFoundError) as exc:
        raise HTTPException(404, str(exc)) from None
    return public(best)
