"""Text from a study's best checkpoint, whole or streamed as server-sent events.

Built per app (`router(settings)`), unlike the other route modules: the body's bounds are the
server's (PREFSWEEP_MAX_PROMPT_CHARS, _MAX_NEW_TOKENS), and they are part of its schema.
(No `from __future__ import annotations` here: FastAPI must see that per-app model itself.)"""
import json

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api import schemas
from api.deps import Models, Studies, StudyId
from api.errors import responses
from api.serving import GenerateIn, GenerationParams
from sweep.service.settings import Settings

SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "enum": ["meta", "message", "done"]}, "data": {"type": "string", "description": "JSON"}}}


def router(settings: Settings) -> APIRouter:
    routes = APIRouter()
    Body = GenerateIn.bounded(settings)

    @routes.post("/studies/{study_id}/generate", response_model=schemas.Generated, responses=responses(400, 404, 409))
    def generate(study_id: StudyId, body: Body, studies: Studies, models: Models):
        studies.get(study_id)
        return models.generate(study_id, GenerationParams(**body.model_dump()))

    @routes.post("/studies/{study_id}/generate/stream", responses={
        **responses(400, 404, 409),
        200: {"description": "Server-sent events: `event: meta` (data: {trial_id}), then one unnamed event per "
                             "piece of text (data: {text}), then `event: done`.",
              "content": {"text/event-stream": {"schema": SSE_EVENT}}}})
    def generate_stream(study_id: StudyId, body: Body, studies: Studies, models: Models):
        studies.get(study_id)
        trial_id, pieces = models.stream(study_id, GenerationParams(**body.model_dump()))

        def events():
            yield f"event: meta\ndata: {json.dumps({'trial_id': trial_id})}\n\n"
            for piece in pieces:
                if piece:
                    yield f"data: {json.dumps({'text': piece})}\n\n"
            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return routes
