"""The studies table (SQLAlchemy 2): SQLite by default, Postgres by URL.

The service's index of its studies: one row per study record under its storage (however the
study was started), kept in step with the records and with Ray jobs by sweep.service.registry,
plus the rows of studies launched through the API whose driver has not written a record yet.
Trial data lives in each study's Optuna storage and MLflow, the job in Ray.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, String, Text, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, sessionmaker

from sweep.config.redact import private_dir
from sweep.storage import databases as stores

# pending: submitted, Ray job not started; running; finished; failed; cancelled (stopped via
# the API or `ray job stop`); interrupted (the driver or its Ray job is gone: `prefsweep resume`).
ACTIVE_STATES = ("pending", "running")
FINAL_STATES = ("finished", "failed", "cancelled", "interrupted")
STATES = ACTIVE_STATES + FINAL_STATES


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # == the study name
    name: Mapped[str] = mapped_column(String(64), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(64), default="api")
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {c.name: aware(getattr(self, c.name)) for c in self.__table__.columns}


def aware(value: Any) -> Any:
    # SQLite hands datetimes back naive; they were written in UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Database:
    def __init__(self, url: str):
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                # The rows hold whole configs, database URLs included: owner-only (SQLite gives
                # its journal and WAL files the database file's mode).
                private_dir(Path(path).parent)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        # The process's one engine for this URL, with a bounded pool (sweep.storage.databases).
        self.engine = stores.engine(url, json_serializer=lambda v: json.dumps(v, default=str))
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def get(self, study_id: str) -> Study | None:
        with self.session() as s:
            return s.get(Study, study_id)

    def add(self, study: Study) -> None:
        with self.session() as s:
            s.add(study)

    def update(self, study_id: str, **values: Any) -> Study | None:
        with self.session() as s:
            study = s.get(Study, study_id)
            if study is None:
                return None
            for key, value in values.items():
                setattr(study, key, value)
            study.updated_at = utcnow()
            if values.get("state") in FINAL_STATES and study.ended_at is None:
                study.ended_at = study.updated_at
            if values.get("state") in ACTIVE_STATES and "ended_at" not in values:
                study.ended_at = None  # running again (resumed)
            if values.get("state") == "running" and study.started_at is None:
                study.started_at = study.updated_at
            return study

    def delete(self, study_id: str) -> None:
        with self.session() as s:
            study = s.get(Study, study_id)
            if study is not None:
                s.delete(study)

    def list(self, state: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[Study], int]:
        with self.session() as s:
            query = select(Study)
            count = select(func.count()).select_from(Study)
            if state:
                query, count = query.where(Study.state == state), count.where(Study.state == state)
            total = s.scalar(count) or 0
            rows = s.scalars(query.order_by(Study.created_at.desc(), Study.id).offset(offset).limit(limit))
            return list(rows), total

    def by_name(self) -> dict[str, Study]:
        """Every row without its config (what syncing compares), by study name."""
        with self.session() as s:
            return {row.name: row for row in s.scalars(select(Study).options(defer(Study.config)))}

    def active(self) -> list[Study]:
        with self.session() as s:
            return list(s.scalars(select(Study).where(Study.state.in_(ACTIVE_STATES))))
