"""The REST routes, one module per kind of resource. A route is a thin function: it takes its
parameters and the service objects (api.deps), calls one operation of sweep.service, masks
the answer with `public` and lets the service's errors rise (api.errors turns them into
statuses). Every router listed in `token_routers` hangs under the one router that requires
the token; a new module of routes goes into that list (in the order /docs shows them).
"""
from __future__ import annotations

from fastapi import APIRouter

from api.routes import generation, generations, jobs, reports, studies, trials
from sweep.service.settings import Settings


def token_routers(settings: Settings) -> list[APIRouter]:
    return [studies.router, trials.router, reports.router, generations.router, jobs.router, generation.router(settings)]
