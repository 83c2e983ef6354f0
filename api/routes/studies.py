"""Studies: the list, launching one, reading one."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api import schemas
from api.deps import Studies, StudyId
from api.errors import responses
from api.schemas import public
from sweep.config.schema import NAME_PATTERN
from sweep.service.index import STATES

LIST_TTL_S = 1.0  # a page of GET /studies is computed at most this often, for every poller
router = APIRouter()


class SharedPages:
    """GET /studies pages as JSON bytes, computed (off the event loop) once per LIST_TTL_S
    however many clients poll, and answered from memory meanwhile. A launch or cancel (the
    registry's `version`) makes them stale at once; other processes' changes show within
    LIST_TTL_S."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.pages: dict[tuple, tuple[float, int, bytes]] = {}  # key -> (computed at, version, JSON)


@router.get("/studies", response_model=schemas.StudyPage)
async def list_studies(studies: Studies, request: Request, state: Literal[STATES] | None = None,
                       offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50):
    shared: SharedPages = request.app.state.pages
    key = (state, offset, limit)
    async with shared.lock:
        computed, version, body = shared.pages.get(key, (float("-inf"), -1, b""))
        if time.monotonic() - computed >= LIST_TTL_S or version != studies.version:
            version = studies.version
            body = await run_in_threadpool(_page_json, studies, state, offset, limit)
            if len(shared.pages) > 1000:
                shared.pages.clear()
            shared.pages[key] = (time.monotonic(), version, body)
    return Response(body, media_type="application/json")


def _page_json(studies, state: str | None, offset: int, limit: int) -> bytes:
    page = public(studies.page(state, offset, limit))
    return schemas.StudyPage.model_validate(page).model_dump_json().encode()


@router.post("/studies", status_code=201, response_model=schemas.Created,
             responses={**responses(409, 415, 429), 422: {"model": schemas.ConfigProblems}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/PrefsweepConfig"}},
                 "application/yaml": {"schema": {"type": "string"}}}}})
async def launch(studies: Studies, request: Request,
                 overrides: Annotated[list[str], Query(alias="set", description="`--set`-style KEY=VALUE "
                                                       "overrides, e.g. set=train.max_steps=40")] = [],  # noqa: B006 (FastAPI copies defaults)
                 owner: Annotated[str, Query(pattern=NAME_PATTERN.pattern)] = "api"):
    raw = await request.body()  # the body is read by hand: YAML or JSON
    # Parsing, validation (YAML of `set=`, deep copies), the database and Ray: off the event loop.
    return await run_in_threadpool(studies.launch, raw, request.headers.get("content-type", ""), list(overrides),
                                   owner)


@router.get("/studies/{study_id}", response_model=schemas.StudyDetail, responses=responses(404))
def get_study(study_id: StudyId, studies: Studies):
    return public(studies.detail(study_id))
