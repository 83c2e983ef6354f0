"""The REST service: thin routes over `sweep.service.studies` (the CLI's functions), the studies
table and Ray Jobs. A study's id is its name (unique per storage; 409 on a duplicate)."""
import json
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, create_model

from api import schemas
from api.db import FINAL_STATES, STATES, Database, Study
from api.jobs import JobNotFound, RayJobs, RayUnavailable, reconcile
from api.security import prepare_config, require_token
from api.serving import GREEDY_BELOW, GenerationParams, Generator, NoCheckpoint
from api.settings import Settings
from sweep.config.loading import ConfigError, dump_yaml
from sweep.config.schema import NAME_PATTERN
from sweep.service import studies as service
from sweep.storage.record import exists as study_exists

log = logging.getLogger("prefsweep.api")
STATIC = Path(__file__).parent / "static"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_BODY = 1 << 20
StudyId = Annotated[str, PathParam(pattern=NAME_PATTERN.pattern, description="Study id (= study name).")]
Auth = [Depends(require_token)]
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "enum": ["meta", "message", "done"]}, "data": {"type": "string", "description": "JSON"}}}


def _errors(*codes: int) -> dict:
    text = {400: "Body is not parseable JSON", 401: "Missing or wrong bearer token", 404: "No such study",
            409: "Conflict with the study's state",
            413: "Body too large", 415: "Unsupported content type", 429: "Too many running studies",
            503: "Ray is unreachable"}
    return {c: {"model": schemas.Problem, "description": text[c]} for c in codes}


class NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a few aliases can expand to gigabytes once copied."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def config_problems(err: ConfigError) -> JSONResponse:
    detail = [{"loc": ["body", *field.split(".")], "msg": msg, "type": "config", "field": field}
              for field, msg in err.problems]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: Settings) -> FastAPI:
    settings.ensure_token()
    db = Database(settings.database_url)
    jobs = RayJobs(settings)
    generator = Generator(settings)
    launch_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            reconcile(db, jobs)  # studies that ended (or vanished) while we were down
        except Exception as exc:  # never refuse to start over Ray
            log.warning("startup reconcile failed: %s", exc)
        yield

    app = FastAPIOffline(title="prefsweep", version="0.1.0", lifespan=lifespan,
                         description="Hyperparameter sweeps for preference fine-tuning. Mutating routes, logs "
                         "and generation need `Authorization: Bearer <PREFSWEEP_API_TOKEN>`.")
    app.state.settings, app.state.db, app.state.jobs, app.state.generator = settings, db, jobs, generator
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ConfigError)
    async def _config_error(request, err: ConfigError):
        return config_problems(err)

    @app.exception_handler(RayUnavailable)
    async def _ray_down(request, err: RayUnavailable):
        return JSONResponse({"detail": str(err)}, status_code=503)

    def study_or_404(study_id: str) -> Study:
        reconcile(db, jobs, study_id)
        study = db.get(study_id)
        if study is None:
            raise HTTPException(404, f"no study {study_id!r}")
        return study

    def storage_of(study: Study) -> str:
        return study.config.get("storage", {}).get("path", settings.storage_path)

    ended: dict[str, tuple] = {}  # name -> (best, progress) of ended studies: they no longer change

    def summary(study: Study, status: dict | None = None) -> dict:
        if status is None and study.name in ended and study.state in FINAL_STATES:
            status = {"best": ended[study.name][0], "progress": ended[study.name][1]}
        if status is None:
            try:
                status = service.study_status(study.name, storage_of(study))
            except FileNotFoundError:
                status = None
        if status is not None and study.state in FINAL_STATES:
            if len(ended) > 1000:
                ended.clear()
            ended[study.name] = (status["best"], status["progress"])
        metric = study.config["sweep"]["metric"]
        best = (status or {}).get("best")
        return {**study.as_dict(), "metric": metric, "best_value": best["value"] if best else None,
                "progress": status["progress"] if status else None}

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", response_model=schemas.Health)
    def healthz():
        return {"status": "ok", "version": app.version, "database": db.engine.url.get_backend_name(),
                "ray_address": jobs.address, "studies_active": len(db.active())}

    @app.get("/studies", response_model=schemas.StudyPage)
    def list_studies(state: Literal[STATES] | None = None, offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50):
        reconcile(db, jobs)
        rows, total = db.list(state, offset, limit)
        return schemas.finite({"items": [summary(r) for r in rows], "total": total, "offset": offset, "limit": limit})

    @app.post("/studies", status_code=201, response_model=schemas.Created, dependencies=Auth,
              responses={**_errors(401, 409, 413, 415, 429, 503), 422: {"model": schemas.ConfigProblems}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/PrefsweepConfig"}},
                  "application/yaml": {"schema": {"type": "string"}}}}})
    async def launch(request: Request,
                     overrides: Annotated[list[str], Query(alias="set", description="`--set`-style KEY=VALUE "
                                                           "overrides, e.g. set=train.max_steps=40")] = [],  # noqa: B006 (FastAPI copies defaults)
                     owner: Annotated[str, Query(pattern=NAME_PATTERN.pattern)] = "api"):
        data = parse_config_body(await request.body(), request.headers.get("content-type", ""))
        cfg = prepare_config(data, list(overrides), settings)
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
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dump_yaml(cfg))
            db.add(Study(id=cfg.name, name=cfg.name, config=cfg.model_dump(mode="json"), owner=owner,
                         state="pending"))
            try:
                submission = jobs.submit(cfg.name, path, owner)
            except Exception:
                db.delete(cfg.name)
                raise
            db.update(cfg.name, submission_id=submission)
        return {"id": cfg.name, "name": cfg.name, "state": "pending", "submission_id": submission}

    @app.get("/studies/{study_id}", response_model=schemas.StudyDetail, responses=_errors(404))
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
        return schemas.finite({
            **summary(study, status), "best": (status or {}).get("best"), "config": study.config,
            "mlflow": {"tracking_uri": mlflow.get("tracking_uri"), "experiment_id": mlflow.get("experiment_id"),
                       "run_id": run, "url": link},
            "ray": {"submission_id": sid, "dashboard_url": f"{jobs.address}/#/jobs/{sid}" if sid else None},
        })

    @app.get("/studies/{study_id}/trials", response_model=schemas.Trials, responses=_errors(404))
    def get_trials(study_id: StudyId, curves: Annotated[list[str] | None, Query(
            description="Metrics whose per-step curves to include (default: the sweep metric and loss)")] = None):
        study = study_or_404(study_id)
        metric = study.config["sweep"]["metric"]
        wanted = curves if curves is not None else [metric["name"], "loss"]
        trials = service.study_trials(study.name, storage_of(study), curves=[c for c in wanted if c][:20])
        return schemas.finite({"study": study.id, "metric": metric, "trials": trials})

    @app.get("/studies/{study_id}/best", response_model=schemas.BestTrial, responses=_errors(404))
    def get_best(study_id: StudyId):
        study = study_or_404(study_id)
        try:
            _, best = service.best_trial(study.name, storage_of(study))
        except (LookupError, FileNotFoundError) as exc:
            raise HTTPException(404, str(exc)) from None
        return schemas.finite(best)

    @app.post("/studies/{study_id}/cancel", response_model=schemas.StudyDetail, dependencies=Auth,
              responses=_errors(401, 404, 409, 503))
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
        return get_study(study_id)

    @app.get("/studies/{study_id}/logs", response_model=schemas.Logs, dependencies=Auth,
             responses=_errors(401, 404, 503))
    def logs(study_id: StudyId, lines: Annotated[int, Query(ge=1, le=5000)] = 200):
        study = study_or_404(study_id)
        if not study.submission_id:
            raise HTTPException(404, "the study has no Ray job")
        try:
            text = jobs.logs(study.submission_id)
        except JobNotFound:
            raise HTTPException(404, "the Ray job is gone (cluster restarted?)") from None
        return {"submission_id": study.submission_id, "lines": text.splitlines()[-lines:]}

    GenerateIn = create_model(
        "GenerateIn",
        prompt=(str, Field(min_length=1, max_length=settings.max_prompt_chars)),
        max_new_tokens=(int, Field(64, ge=1, le=settings.max_new_tokens)),
        temperature=(float, Field(0.8, ge=0.0, le=2.0,
                                 description=f"0 = greedy; under {GREEDY_BELOW:g} greedy too (the limit)")),
        top_p=(float, Field(0.95, gt=0.0, le=1.0)),
    )

    def params_of(body: BaseModel, study_id: str) -> GenerationParams:
        study_or_404(study_id)
        return GenerationParams(**body.model_dump())

    @app.post("/studies/{study_id}/generate", response_model=schemas.Generated, dependencies=Auth,
              responses=_errors(400, 401, 404, 409))
    def generate(study_id: StudyId, body: GenerateIn):
        params = params_of(body, study_id)
        try:
            return generator.generate(study_id, params)
        except NoCheckpoint as exc:
            raise HTTPException(409, f"no checkpoint to serve yet: {exc}") from None

    @app.post("/studies/{study_id}/generate/stream", dependencies=Auth, responses={
        **_errors(400, 401, 404, 409),
        200: {"description": "Server-sent events: `event: meta` (data: {trial_id}), then one unnamed event per "
                             "piece of text (data: {text}), then `event: done`.",
              "content": {"text/event-stream": {"schema": SSE_EVENT}}}})
    def generate_stream(study_id: StudyId, body: GenerateIn):
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
    import optuna

    from sweep import tracking
    from sweep.storage.record import optuna_url

    tracking.ensure_experiment(cfg, tracking.tracking_uri(cfg))
    optuna.storages.RDBStorage(optuna_url(cfg))


def parse_config_body(raw: bytes, content_type: str) -> dict:
    if len(raw) > MAX_BODY:
        raise HTTPException(413, f"config body over {MAX_BODY} bytes")
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind in YAML_TYPES:
            data = yaml.load(raw.decode("utf-8"), Loader=NoAliasLoader)
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
