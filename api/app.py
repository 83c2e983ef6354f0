"""The REST service: the app that holds the routes (api.routes) over one study registry
(sweep.service.registry), with the body limits, the error answers (api.errors), the page's
static files and the OpenAPI schema. A study's id is its name (unique per storage)."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api import errors
from api.limits import BodyLimits
from api.routes import public, token_routers
from api.routes.studies import SharedPages
from api.security import require_token
from api.serving import Generator
from sweep.service.registry import Registry
from sweep.service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    settings.ensure_token()
    registry = Registry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry.start()
        yield

    app = FastAPIOffline(title="prefsweep", version="0.1.0", lifespan=lifespan,
                         description="Hyperparameter sweeps for preference fine-tuning. Every route but "
                         "`/healthz` needs `Authorization: Bearer <PREFSWEEP_API_TOKEN>`.")
    app.state.settings, app.state.registry, app.state.generator = settings, registry, Generator(settings)
    app.state.pages = SharedPages()
    app.add_middleware(BodyLimits)
    errors.install(app)
    app.mount("/static", StaticFiles(directory=public.STATIC), name="static")
    app.include_router(public.router)
    # Every route under this router needs the token: one dependency, nothing to forget on a new
    # route. Outside it: /healthz, the page and its static files, the API docs and schema.
    api = APIRouter(dependencies=[Depends(require_token)], responses=errors.responses(401, 413, 503))
    for router in token_routers(settings):
        api.include_router(router)
    app.include_router(api)
    app.openapi = lambda: openapi_with_config(app)
    return app


def openapi_with_config(app: FastAPI) -> dict:
    """The generated schema plus PrefsweepConfig (the POST /studies body, read by hand so
    that YAML works too)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from sweep.config.schema import PrefsweepConfig

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        config = PrefsweepConfig.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(config.pop("$defs", {}))
        components["PrefsweepConfig"] = config
        app.openapi_schema = schema
    return app.openapi_schema
