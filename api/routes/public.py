"""What needs no token: the web page and the liveness probe (the page's static files and the
API docs are mounted by api.app)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from api import schemas

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
def index():
    return FileResponse(STATIC / "index.html")


@router.get("/healthz", response_model=schemas.Health)
async def healthz(request: Request):
    # Async and without I/O: it answers while every worker thread waits on a busy store.
    return {"status": "ok", "version": request.app.version,
            "database": request.app.state.registry.index.engine.url.get_backend_name()}
