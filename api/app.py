"""The REST service: thin routes over `sweep.service.studies` (the CLI's functions), the studies
table and Ray Jobs. A study's id is its name (unique per storage; 409 on a duplicate)."""
import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api import errors, schemas
from api.db import FINAL_STATES, STATES, Database, Study
from api.jobs import JobNotFound, RayJobs, reconcile
from api.limits import BodyLimits
from api.schemas import public
from api.security import prepare_config, require_token
from api.serving import GenerateIn, GenerationParams, Generator, NoCheckpoint
from api.settings import Settings
from sweep.config.loading import ConfigError, dump_yaml, load_untrusted_yaml
from sweep.config.redact import mask_url, private_dir, write_private
from sweep.config.schema import NAME_PATTERN
from sweep.service import studies as service
from sweep.storage.record import exists as study_exists

log = logging.getLogger("prefsweep.api")
STATIC = Path(__file__).parent / "static"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
StudyId = Annotated[str, PathParam(pattern=NAME_PATTERN.pattern, description="Study id (= study name).")]
RECONCILE_S = 2.0  # unfinished studies are checked with Ray at most this often (per study, and for lists)
LIST_TTL_S = 1.0  # a page of GET /studies is recomputed at most this often
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "enum": ["meta", "message", "done"]}, "data": {"type": "string", "description": "JSON"}}}


def _errors(*codes: int) -> dict:
    text = {400: "Body is not parseable (e.g. not UTF-8)", 401: "Missing or wrong bearer token", 404: "No such study",
            409: "Conflict with the study's state", 413: "Body too large", 415: "Unsupported content type",
            429: "Too many running studies", 503: "Ray or a study database is unreachable or busy (Retry-After)"}
    return {c: {"model": schemas.Problem, "description": text[c]} for c in codes}


def create_app(settings: Settings) -> FastAPI:
    settings.ensure_token()
    private_dir(settings.data_dir)  # the token, the database, submitted configs, exports
    db = Database(settings.database_url)
    jobs = RayJobs(settings)
    generator = Generator(settings)
    launch_lock = threading.Lock()
    checked: dict[str | None, float] = {}  # study id (None: all) -> when last reconciled

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            reconcile(db, jobs)  # studies that ended (or vanished) while we were down
        except Exception as exc:  # never refuse to start over Ray
            log.warning("startup reconcile failed: %s", exc)
        yield

    app = FastAPIOffline(title="prefsweep", version="0.1.0", lifespan=lifespan,
                         description="Hyperparameter sweeps for preference fine-tuning. Every route but "
                         "`/healthz` needs `Authorization: Bearer <PREFSWEEP_API_TOKEN>`.")
    app.state.settings, app.state.db, app.state.jobs, app.state.generator = settings, db, jobs, generator
    app.add_middleware(BodyLimits)
    errors.install(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Every route on this router needs the token: one dependency, nothing to forget on a new
    # route. Outside it: /healthz, the page and its static files, the API docs and schema.
    api = APIRouter(dependencies=[Depends(require_token)], responses=_errors(401, 413, 503))

    def reconciled(study_id: str | None = None) -> None:
        """Unfinished studies in line with their Ray jobs, at most every RECONCILE_S: a Ray
        call per active study on every read would pass the API's read load on to Ray."""
        now = time.monotonic()
        if now - checked.get(study_id, float("-inf")) >= RECONCILE_S:
            checked[study_id] = now
            reconcile(db, jobs, study_id)

    def study_or_404(study_id: str) -> Study:
        reconciled(study_id)
        study = db.get(study_id)
        if study is None:
            raise HTTPException(404, f"no study {study_id!r}")
        return study

    def storage_of(study: Study) -> str:
        return study.config.get("storage", {}).get("path", settings.storage_path)

    ended: dict[str, dict] = {}  # name -> progress of an ended study: it no longer changes

    def summary(study: Study) -> dict:
        progress = ended.get(study.name) if study.state in FINAL_STATES else None
        if progress is None:
            blank = {"progress": None, "best_value": None}
            try:
                progress = service.study_progress(study.name, storage_of(study))
            except FileNotFoundError:  # the driver has not written study.json yet
                progress = blank
            except Exception as exc:
                if not errors.store_unavailable(exc):
                    raise
                # One study's store out of reach blanks its numbers, not every list: its own
                # routes (/trials, /best) answer 503 for it.
                log.warning("study %s: its Optuna store is out of reach: %s", study.name, mask_url(str(exc))[:300])
                return {**study.as_dict(), "metric": study.config["sweep"]["metric"], **blank}
            if study.state in FINAL_STATES:
                if len(ended) > 1000:
                    ended.clear()
                ended[study.name] = progress
        return {**study.as_dict(), "metric": study.config["sweep"]["metric"], **progress}

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz():
        # Async and without I/O: it answers while every worker thread waits on a busy store.
        return {"status": "ok", "version": app.version, "database": db.engine.url.get_backend_name()}

    pages: dict[tuple, tuple[float, bytes]] = {}  # (state, offset, limit) -> (computed at, JSON)
    page_lock = asyncio.Lock()

    def list_page(state: str | None, offset: int, limit: int) -> bytes:
        reconciled()
        rows, total = db.list(state, offset, limit)
        page = public({"items": [summary(r) for r in rows], "total": total, "offset": offset, "limit": limit})
        return schemas.StudyPage.model_validate(page).model_dump_json().encode()

    @api.get("/studies", response_model=schemas.StudyPage)
    async def list_studies(state: Literal[STATES] | None = None,
                           offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50):
        # The list is what pages and dashboards poll: a page is computed (off the event loop)
        # once per LIST_TTL_S however many clients ask, and answered from memory meanwhile;
        # launch and cancel drop it at once, other processes' changes show within LIST_TTL_S.
        key = (state, offset, limit)
        async with page_lock:
            computed, body = pages.get(key, (float("-inf"), b""))
            if time.monotonic() - computed >= LIST_TTL_S:
                body = await run_in_threadpool(list_page, state, offset, limit)
                if len(pages) > 1000:
                    pages.clear()
                pages[key] = (time.monotonic(), body)
        return Response(body, media_type="application/json")

    @api.post("/studies", status_code=201, response_model=schemas.Created,
              responses={**_errors(409, 415, 429), 422: {"model": schemas.ConfigProblems}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/PrefsweepConfig"}},
                  "application/yaml": {"schema": {"type": "string"}}}}})
    async def launch(request: Request,
                     overrides: Annotated[list[str], Query(alias="set", description="`--set`-style KEY=VALUE "
                                                           "overrides, e.g. set=train.max_steps=40")] = [],  # noqa: B006 (FastAPI copies defaults)
                     owner: Annotated[str, Query(pattern=NAME_PATTERN.pattern)] = "api"):
        raw = await request.body()
        # Parsing, validation (YAML of `set=`, deep copies) and the database: off the event loop.
        return await run_in_threadpool(launch_study, raw, request.headers.get("content-type", ""), list(overrides),
                                       owner)

    def launch_study(raw: bytes, content_type: str, overrides: list[str], owner: str) -> dict:
        cfg = prepare_config(parse_config_body(raw, content_type), overrides, settings)
        with launch_lock:
            if db.get(cfg.name) is not None or study_exists(settings.storage_path, cfg.name):
                raise HTTPException(409, f"study {cfg.name!r} exists; choose another name")
            reconcile(db, jobs)
            if len(db.active()) >= settings.max_running_studies:
                limit = settings.max_running_studies
                raise HTTPException(429, f"at most {limit} studies may be pending or running at once "
                                         f"(PREFSWEEP_MAX_RUNNING_STUDIES={limit}); try again when one ends")
            prepare_stores(cfg)
            path = settings.configs_dir / f"{cfg.name}.yaml"
            write_private(path, dump_yaml(cfg, secrets=True))  # the job's config: its real URLs, 0600
            db.add(Study(id=cfg.name, name=cfg.name, config=cfg.model_dump(mode="json"), owner=owner,
                         state="pending"))
            try:
                submission = jobs.submit(cfg.name, path, owner)
            except Exception:
                db.delete(cfg.name)
                path.unlink(missing_ok=True)
                raise
            db.update(cfg.name, submission_id=submission)
            pages.clear()
        return {"id": cfg.name, "name": cfg.name, "state": "pending", "submission_id": submission}

    @api.get("/studies/{study_id}", response_model=schemas.StudyDetail, responses=_errors(404))
    def get_study(study_id: StudyId):
        study = study_or_404(study_id)
        try:
            status = service.study_status(study.name, storage_of(study))
        except FileNotFoundError:
            status = None
        mlflow = (status or {}).get("mlflow") or {}
        ui = settings.mlflow_ui_url
        run = mlflow.get("parent_run_id")
        link = f"{ui.rstrip('/')}/#/experiments/{mlflow.get('experiment_id')}/runs/{run}" if ui and run else None
        sid = study.submission_id
        return public({
            **summary(study), "best": (status or {}).get("best"), "config": study.config,
            "mlflow": {"tracking_uri": mlflow.get("tracking_uri"), "experiment_id": mlflow.get("experiment_id"),
                       "run_id": run, "url": link},
            "ray": {"submission_id": sid, "dashboard_url": f"{jobs.address}/#/jobs/{sid}" if sid else None},
        })

    @api.get("/studies/{study_id}/trials", response_model=schemas.Trials, responses=_errors(404))
    def get_trials(study_id: StudyId, curves: Annotated[list[str], Query(
            description="Metrics whose per-step curves to include (none given: the sweep metric and loss; "
                        "`curves=` alone: none)")] = []):  # noqa: B006 (FastAPI copies defaults)
        study = study_or_404(study_id)
        metric = study.config["sweep"]["metric"]
        wanted = curves or [metric["name"], "loss"]
        trials = service.study_trials(study.name, storage_of(study), curves=[c for c in wanted if c][:20])
        return public({"study": study.id, "metric": metric, "trials": trials})

    @api.get("/studies/{study_id}/best", response_model=schemas.BestTrial, responses=_errors(404))
    def get_best(study_id: StudyId):
        study = study_or_404(study_id)
        try:
            _, best = service.best_trial(study.name, storage_of(study))
        except (LookupError, FileNotFoundError) as exc:
            raise HTTPException(404, str(exc)) from None
        return public(best)

    @api.post("/studies/{study_id}/cancel", response_model=schemas.StudyDetail, responses=_errors(404, 409))
    def cancel(study_id: StudyId):
        study = study_or_404(study_id)
        if study.state in FINAL_STATES:
            raise HTTPException(409, f"study {study_id!r} already ended: {study.state}")
        if study.submission_id:
            try:
                jobs.stop(study.submission_id)
            except JobNotFound:
                pass
        db.update(study.id, state="cancelled", error="cancelled through the API")
        service.mark_stopped(study.name, storage_of(study), "cancelled through the API")
        pages.clear()
        return get_study(study_id)

    @api.get("/studies/{study_id}/logs", response_model=schemas.Logs, responses=_errors(404))
    def logs(study_id: StudyId, lines: Annotated[int, Query(ge=1, le=5000)] = 200):
        study = study_or_404(study_id)
        if not study.submission_id:
            raise HTTPException(404, "the study has no Ray job")
        try:
            text = jobs.logs(study.submission_id)
        except JobNotFound:
            raise HTTPException(404, "the Ray job is gone (cluster restarted?)") from None
        return public({"submission_id": study.submission_id, "lines": text.splitlines()[-lines:]})

    Body = GenerateIn.bounded(settings)

    def params_of(body: GenerateIn, study_id: str) -> GenerationParams:
        study_or_404(study_id)
        return GenerationParams(**body.model_dump())

    @api.post("/studies/{study_id}/generate", response_model=schemas.Generated, responses=_errors(400, 404, 409))
    def generate(study_id: StudyId, body: Body):
        params = params_of(body, study_id)
        try:
            return generator.generate(study_id, params)
        except NoCheckpoint as exc:
            raise HTTPException(409, f"no checkpoint to serve yet: {exc}") from None

    @api.post("/studies/{study_id}/generate/stream", responses={
        **_errors(400, 404, 409),
        200: {"description": "Server-sent events: `event: meta` (data: {trial_id}), then one unnamed event per "
                             "piece of text (data: {text}), then `event: done`.",
              "content": {"text/event-stream": {"schema": SSE_EVENT}}}})
    def generate_stream(study_id: StudyId, body: Body):
        params = params_of(body, study_id)
        try:
            trial_id, pieces = generator.stream(study_id, params)
        except NoCheckpoint as exc:
            raise HTTPException(409, f"no checkpoint to serve yet: {exc}") from None

        def events():
            yield f"event: meta\ndata: {json.dumps({'trial_id': trial_id})}\n\n"
            for piece in pieces:
                if piece:
                    yield f"data: {json.dumps({'text': piece})}\n\n"
            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

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


def prepare_stores(cfg) -> None:
    """Create the MLflow and Optuna databases (and the experiment) here, one launch at a time:
    two sweeps starting at once on a fresh SQLite file would both run its schema migrations."""
    from sweep import tracking
    from sweep.storage.databases import optuna_storage
    from sweep.storage.record import optuna_url

    tracking.ensure_experiment(cfg, tracking.tracking_uri(cfg))
    optuna_storage(optuna_url(cfg))  # creates the tables once; kept for this service's reads


def parse_config_body(raw: bytes, content_type: str) -> dict:
    """The config from a JSON or YAML body (its size and JSON depth are api.limits' business)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind in YAML_TYPES:
            data = load_untrusted_yaml(raw.decode("utf-8"))
        elif kind in ("application/json", ""):
            data = json.loads(raw or b"null")
        else:
            raise HTTPException(415, "send the config as application/json or application/yaml")
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise ConfigError([("(body)", f"not valid {'YAML' if kind in YAML_TYPES else 'JSON'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the config must be a mapping of sections")])
    return data
