"""What trials said, side by side with the reference: each chosen trial's latest evaluated
generations (GET /studies/{id}/generations), as `prefsweep compare` shows them."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import schemas
from api.deps import Studies, StudyId
from api.errors import responses
from api.schemas import public
from sweep.service.generations import MAX_TRIALS, study_generations

router = APIRouter()


@router.get("/studies/{study_id}/generations", response_model=schemas.Generations, responses=responses(404))
def get_generations(study_id: StudyId, studies: Studies,
                    trials: Annotated[str | None, Query(
                        max_length=2000, pattern=r"^[A-Za-z0-9_,-]*$",
                        description=f"Comma-separated trial ids (at most {MAX_TRIALS}); none: the champion, "
                                    "then the Pareto front or the best by the sweep metric")] = None,
                    top: Annotated[int, Query(ge=1, le=MAX_TRIALS, description="Trials when none are named")] = 3):
    study = studies.get(study_id)
    wanted = [t for t in (trials or "").split(",") if t]
    return public(study_generations(study.name, studies.storage, wanted or None, top))
