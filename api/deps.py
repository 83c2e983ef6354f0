"""What a route may ask for: the app's service objects (as FastAPI dependencies, async: no
thread hop to read app.state) and the study id path parameter."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from api.serving import Generator
from sweep.config.schema import NAME_PATTERN
from sweep.service.registry import Registry
from sweep.service.settings import Settings

StudyId = Annotated[str, PathParam(pattern=NAME_PATTERN.pattern, description="Study id (= study name).")]


async def _registry(request: Request) -> Registry:
    return request.app.state.registry


async def _generator(request: Request) -> Generator:
    return request.app.state.generator


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


Studies = Annotated[Registry, Depends(_registry)]
ServiceSettings = Annotated[Settings, Depends(_settings)]
Models = Annotated[Generator, Depends(_generator)]
