"""Who may call the service: a bearer token on every route but /healthz, the page and the API
docs (one dependency on the API router), compared in constant time. What a submitted config
may touch is sweep.service.submitted's rule."""
from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from sweep.service.settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def token_ok(header: str | None, token: str) -> bool:
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


# Declares the scheme in the OpenAPI schema (the Authorize button in /docs); the comparison
# below reads the raw header itself, in constant time.
BEARER = HTTPBearer(auto_error=False, description="The service's PREFSWEEP_API_TOKEN.")


async def require_token(request: Request, _declared=Depends(BEARER)) -> None:
    """FastAPI dependency: 401 unless `Authorization: Bearer <PREFSWEEP_API_TOKEN>`. Async (no
    I/O in it): a request without the token is answered on the event loop, never queued for a
    worker thread behind requests that wait on a busy database."""
    settings: Settings = request.app.state.settings
    if not token_ok(request.headers.get("authorization"), settings.api_token or ""):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
