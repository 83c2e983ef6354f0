"""Bounds on request bodies, checked before any route, dependency or parser sees one.

Before the token check on purpose: FastAPI reads and parses a JSON body (`generate`) before it
runs a route's dependencies, and uvicorn accepts a body of any size. So every request body is
held to MAX_BODY bytes (413), and a JSON body to MAX_DEPTH levels of nesting (422): a body
nested ~900 deep used to reach a RecursionError in the config's deepcopy (a 500), deeper ones
the JSON parser's own recursion. YAML bodies are bounded by sweep.config.loading's loader.
"""
from __future__ import annotations

import json
import re
from itertools import accumulate

import anyio

from sweep.config.loading import MAX_DEPTH

MAX_BODY = 1 << 20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text (strings skipped); linear time."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_DEPTH:
        return brackets.count(b"[") + brackets.count(b"{")  # an upper bound, and small: done
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets), default=0)


def _is_json(content_type: bytes) -> bool:
    kind = content_type.split(b";")[0].strip().lower()
    return kind in (b"", b"application/json") or (kind.startswith(b"application/") and kind.endswith(b"+json"))


class BodyLimits:
    """Pure ASGI middleware: reads the body once, refuses it or hands it on unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return await _reply(send, 413, {"detail": f"request body over {MAX_BODY} bytes"})
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY:
                return await _reply(send, 413, {"detail": f"request body over {MAX_BODY} bytes"})
        body = b"".join(chunks)
        if body and _is_json(headers.get(b"content-type", b"")):
            # A large body's scan would hold the event loop for tens of ms: off the loop then.
            depth = json_depth(body) if size < 65536 else await anyio.to_thread.run_sync(json_depth, body)
            if depth > MAX_DEPTH:
                return await _reply(send, 422, {"detail": [{
                    "loc": ["body"], "msg": f"JSON nested deeper than {MAX_DEPTH} levels", "type": "json_depth",
                    "field": "(body)"}]})
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
