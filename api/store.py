"""The job store: jobs, generations, result documents and idempotency keys behind one class.

SQLite (the embedded default) runs in WAL mode with a busy timeout, so a driver process can
write a generation while the API reads; PostgreSQL is used the same way through ``psycopg``.
The schema belongs to Alembic (:func:`migrate`); nothing here creates tables by itself.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .models import GenerationRow, IdempotencyKeyRow, JobRow, ResultRow, utcnow

RESULT_NAMES = ("hyperparameters", "results")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another request body."""


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the driver's writes
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("api") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent)."""
    _engine(url).dispose()  # creates the SQLite file's directory
    command.upgrade(alembic_config(url), "head")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    # jobs -------------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        kind: str,
        spec: dict[str, Any],
        task: str,
        optimizer: str,
        strategy: str | None,
        launcher: str,
        run_root: Path,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[JobRow, bool]:
        """A new queued job, or (with an ``(key, fingerprint)`` seen before) the job the key made.

        Returns ``(job, created)``; a known key with another fingerprint raises IdempotencyConflict.
        """
        if idempotency is not None:
            existing = self._job_for_key(*idempotency)
            if existing is not None:
                return existing, False
        job_id = new_job_id()
        job = JobRow(
            id=job_id,
            kind=kind,
            status="queued",
            task=task,
            optimizer=optimizer,
            strategy=strategy,
            spec=spec,
            launcher=launcher,
            run_dir=str(run_root / job_id),
        )
        with self.session() as session:
            session.add(job)
            session.flush()
            if idempotency is not None:
                session.add(IdempotencyKeyRow(key=idempotency[0], fingerprint=idempotency[1], job_id=job_id))
            try:
                session.commit()
            except IntegrityError:  # another request with the same key won the race
                session.rollback()
                existing = self._job_for_key(*idempotency) if idempotency else None
                if existing is None:
                    raise
                return existing, False
        return job, True

    def _job_for_key(self, key: str, fingerprint: str) -> JobRow | None:
        with self.session() as session:
            row = session.get(IdempotencyKeyRow, key)
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise IdempotencyConflict(key)
            return session.scalar(select(JobRow).where(JobRow.id == row.job_id))

    def get(self, job_id: str) -> JobRow | None:
        with self.session() as session:
            return session.scalar(select(JobRow).where(JobRow.id == job_id))

    def list(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        optimizer: str | None = None,
        kind: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[JobRow], int | None]:
        """Newest first; ``cursor`` is the ``seq`` below which to continue."""
        query = select(JobRow).order_by(JobRow.seq.desc()).limit(limit + 1)
        for column, value in ((JobRow.status, status), (JobRow.task, task), (JobRow.optimizer, optimizer)):
            if value is not None:
                query = query.where(column == value)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if cursor is not None:
            query = query.where(JobRow.seq < cursor)
        with self.session() as session:
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more else None)

    def with_status(
        self, statuses: Iterable[str], launcher: str | None = None, limit: int | None = None
    ) -> list[JobRow]:
        """Oldest first (the queue order)."""
        query = select(JobRow).where(JobRow.status.in_(list(statuses))).order_by(JobRow.seq).limit(limit)
        if launcher is not None:
            query = query.where(JobRow.launcher == launcher)
        with self.session() as session:
            return list(session.scalars(query))

    def cancel_queued(self, launcher: str) -> None:
        """Queued jobs with a cancel request become cancelled (one statement)."""
        with self.session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.launcher == launcher, JobRow.status == "queued", JobRow.cancel_requested)
                .values(status="cancelled", finished_at=utcnow(), updated_at=utcnow())
            )
            session.commit()

    def update(self, job_id: str, *, only_if_status: Sequence[str] | None = None, **fields: Any) -> bool:
        """Set ``fields``; with ``only_if_status``, only while the job is in one of those states
        (so a late driver write cannot undo a cancel). Returns whether the row changed."""
        with self.session() as session:
            job = session.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
            if job is None or (only_if_status is not None and job.status not in only_if_status):
                return False
            for name, value in fields.items():
                setattr(job, name, value)
            session.commit()
            return True

    def advance_trials(self, job_id: str) -> None:
        """One more trial (or run) finished in the current unit: one atomic increment."""
        with self.session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(trials_done=JobRow.trials_done + 1, updated_at=utcnow())
            )
            session.commit()

    def start_attempt(self, job_id: str, attempt: int, driver: str) -> bool:
        return self.update(
            job_id,
            only_if_status=("queued", "running"),
            status="running",
            attempt=attempt,
            driver=driver,
            started_at=utcnow(),
            error=None,
        )

    def finish(self, job_id: str, status: str, error: str | None = None) -> bool:
        """Move a live job to a terminal ``status`` (a cancelled job stays cancelled)."""
        return self.update(
            job_id, only_if_status=("queued", "running"), status=status, error=error, finished_at=utcnow()
        )

    def request_cancel(self, job_id: str) -> JobRow | None:
        self.update(job_id, only_if_status=("queued", "running"), cancel_requested=True)
        return self.get(job_id)

    # generations and results ------------------------------------------------------------------

    def record_generation(self, job_id: str, record: dict[str, Any]) -> None:
        """Store a finished generation (its GA state included) and move the job's progress.
        Storing the same generation twice keeps the first (a resumed driver may re-send it)."""
        record = json_safe(record)
        g = int(record["generation"])
        finite = [p["fitness"] for p in record["population"] if p["fitness"] is not None]
        best = min(finite) if finite else None
        with self.session() as session:
            exists = session.scalar(
                select(GenerationRow.id).where(GenerationRow.job_id == job_id, GenerationRow.generation == g)
            )
            if exists is None:
                session.add(GenerationRow(job_id=job_id, generation=g, best_fitness=best, record=record))
            job = session.scalar(select(JobRow).where(JobRow.id == job_id))
            job.generation = max(job.generation, g + 1)
            if best is not None and (job.best_fitness is None or best < job.best_fitness):
                job.best_fitness = best
            try:
                session.commit()
            except IntegrityError:
                session.rollback()

    def generations(self, job_id: str) -> list[GenerationRow]:
        query = select(GenerationRow).where(GenerationRow.job_id == job_id).order_by(GenerationRow.generation)
        with self.session() as session:
            return list(session.scalars(query))

    def save_result(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        if name not in RESULT_NAMES:
            raise ValueError(f"Invalid result name: {name!r} (allowed: {' | '.join(RESULT_NAMES)})")
        document = json_safe(document)
        with self.session() as session:
            row = session.scalar(select(ResultRow).where(ResultRow.job_id == job_id, ResultRow.name == name))
            if row is None:
                session.add(ResultRow(job_id=job_id, name=name, document=document))
            else:
                row.document = document
            session.commit()

    def result(self, job_id: str, name: str) -> dict[str, Any] | None:
        query = select(ResultRow.document).where(ResultRow.job_id == job_id, ResultRow.name == name)
        with self.session() as session:
            return session.scalar(query)


def json_safe(value: Any) -> Any:
    """Non-finite floats as None: JSON (and PostgreSQL's json type) has no NaN or Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
