"""How failures become answers: 422 with one {loc, msg, type, field} per problem, 503 with
Retry-After when a store or Ray is out of reach, the service's own errors as their statuses
(`SERVICE_ERRORS`), and never a 500 for a client's input. `responses` documents them per route.

The 422 body never echoes the input back (FastAPI's default does: NaN/Infinity there made the
handler itself fail to serialise, and a lone surrogate cannot be encoded as UTF-8 at all), and
every string in it is made encodable first.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.serving import NoCheckpoint
from sweep.config.loading import ConfigError
from sweep.config.redact import mask_url
from sweep.service.generations import UnknownTrials
from sweep.service.ray_jobs import RayUnavailable
from sweep.service.registry import NoJobLog, NoSuchStudy, StudyConflict, TooManyStudies
from sweep.service.reports import HubPushError, HubRefused, NamespaceNotAllowed, NoHubToken
from sweep.service.submitted import UnsupportedBody
from sweep.storage.databases import store_unavailable

log = logging.getLogger("prefsweep.api")
RETRY_AFTER_S = 1
# What each error of the service layer means to an HTTP client; a route just lets them rise.
SERVICE_ERRORS = {NoSuchStudy: 404, NoJobLog: 404, UnknownTrials: 404, StudyConflict: 409, NoCheckpoint: 409,
                  UnsupportedBody: 415, TooManyStudies: 429,
                  NoHubToken: 403, NamespaceNotAllowed: 403, HubRefused: 403, HubPushError: 502}
_MEANING = {400: "Body is not parseable (e.g. not UTF-8)", 401: "Missing or wrong bearer token", 404: "No such study",
            403: "Not allowed here (e.g. pushing to the hub without the service's own token)",
            409: "Conflict with the study's state", 413: "Body too large", 415: "Unsupported content type",
            429: "Too many running studies", 502: "The Hugging Face hub could not be reached or failed",
            503: "Ray or a study database is unreachable or busy (Retry-After)"}


def responses(*codes: int) -> dict:
    """The OpenAPI `responses` of a route for these error statuses."""
    from api.schemas import Problem

    return {c: {"model": Problem, "description": _MEANING[c]} for c in codes}


def text(value: object) -> str:
    """`value` as a str that encodes as UTF-8 (lone surrogates become \\udxxx escapes)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def problem(loc: list, msg: str, kind: str, field: str | None) -> dict:
    return {"loc": [p if isinstance(p, int) else text(p) for p in loc], "msg": text(msg), "type": text(kind),
            "field": None if field is None else text(field)}


def config_problems(err: ConfigError) -> JSONResponse:
    detail = [problem(["body", *field.split(".")], msg, "config", field) for field, msg in err.problems]
    return JSONResponse({"detail": detail}, status_code=422)


def unavailable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """Every method some route of `app` answers on this path. Starlette's own 405 names only
    the first route that matched the path (GET /studies hid POST /studies)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    import optuna
    from fastapi.exception_handlers import http_exception_handler
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        if err.status_code == 405:
            err.headers = {**(err.headers or {}), "Allow": ", ".join(allowed_methods(app, request.scope))}
        return await http_exception_handler(request, err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        detail = []
        for e in err.errors():
            loc = list(e.get("loc", ()))  # ("body" | "query" | "path", name, ...)
            field = ".".join(str(p) for p in loc[1:]) or "(body)"
            detail.append(problem(loc, e.get("msg", "invalid"), e.get("type", "value_error"), field))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ConfigError)
    async def _config_error(request: Request, err: ConfigError):
        return config_problems(err)

    async def _service_error(request: Request, err: Exception):
        return JSONResponse({"detail": str(err)}, status_code=SERVICE_ERRORS[type(err)])

    for kind in SERVICE_ERRORS:
        app.add_exception_handler(kind, _service_error)

    @app.exception_handler(RayUnavailable)
    async def _ray_down(request: Request, err: RayUnavailable):
        return unavailable(mask_url(str(err)))

    async def _store_error(request: Request, err: Exception):
        if store_unavailable(err):
            log.warning("%s %s: store unavailable: %s", request.method, request.url.path, mask_url(str(err))[:500])
            return unavailable("the study database is busy or unreachable; retry shortly")
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (see the service log)"}, status_code=500)

    for kind in (SQLAlchemyError, optuna.exceptions.StorageInternalError, MlflowException):
        app.add_exception_handler(kind, _store_error)
