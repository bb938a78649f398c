"""The job store: jobs, generations, result documents and idempotency keys behind one class.

SQLite (the embedded default) runs in WAL mode with a busy timeout, so a driver process can
write a generation while the API reads; PostgreSQL is used the same way through ``psycopg``.
The schema belongs to Alembic (:func:`migrate`); nothing here creates tables by itself.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import bindparam, create_engine, event, or_, select, update
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .models import GenerationRow, IdempotencyKeyRow, JobRow, ResultRow, utcnow

RESULT_NAMES = ("hyperparameters", "results", "report")
ERROR_LIMIT = 1000  # characters of a job's error
# an absolute path of two or more parts, not part of a URL or a longer word
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`(),;:]+/)+([^\s/'\"`(),;:]*)")


def public_error(text: str | None) -> str | None:
    """What ``job.error`` holds: one line a user can act on, with no server path in it (an
    absolute path keeps its last part: ``…/train-images-idx3-ubyte``)."""
    if text is None:
        return None
    line = " ".join(_ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}", text).split())
    return line if len(line) <= ERROR_LIMIT else line[: ERROR_LIMIT - 1] + "…"


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


def _read_engine(url: str, engine: Engine) -> Engine:
    """The engine of the API's reads (:meth:`JobStore.get_view`, :meth:`JobStore.list`). SQLite: the
    store's own engine (a SELECT opens no transaction there). PostgreSQL: its own pool in autocommit
    (a SELECT is one round trip: no BEGIN before it, no ROLLBACK when the connection goes back), no
    pre-ping (another round trip per checkout) but connections recycled after 5 minutes, and a read
    that finds its connection dead is retried once on a fresh one (:meth:`JobStore._read`). Sized
    for the server's thread pool (40 threads) without opening and closing overflow connections."""
    if url.startswith("sqlite"):
        return engine
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=20, max_overflow=20, pool_recycle=300)


# What the API's job views read: everything but the run directory and the supervision columns
# (Core columns of the table: the statements below never go through the ORM).
_JOBS = JobRow.__table__
_SUPERVISION = {"run_dir", "heartbeat_at", "lease_owner", "lease_expires_at"}
VIEW_COLUMNS = tuple(c for c in _JOBS.columns if c.name not in _SUPERVISION)
# A page of the list: the summary's columns (no spec, no attempts), and seq for the cursor.
SUMMARY_COLUMNS = tuple(
    c for c in VIEW_COLUMNS if c.name not in {"spec", "attempts", "launcher", "driver", "cancel_requested"}
)
# built once: its cache key is memoized, so a GET only binds the id
_VIEW_BY_ID = select(*VIEW_COLUMNS).where(_JOBS.c.id == bindparam("job_id"))


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
        self._reads = _read_engine(url, self.engine)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        if self._reads is not self.engine:
            self._reads.dispose()
        self.engine.dispose()

    def _read(self, statement, parameters: dict[str, Any] | None = None) -> list[Row]:
        """The rows of one SELECT on the read engine, without a Session (no ORM objects); once more
        on a fresh connection when the first one turns out dead (a restarted PostgreSQL)."""
        for tries_left in (1, 0):
            try:
                with self._reads.connect() as connection:
                    return list(connection.execute(statement, parameters))
            except DBAPIError as err:
                if not (tries_left and err.connection_invalidated):
                    raise
        raise AssertionError("unreachable")

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
            existing = self.job_for_key(*idempotency)
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
                existing = self.job_for_key(*idempotency) if idempotency else None
                if existing is None:
                    raise
                return existing, False
        return job, True

    def job_for_key(self, key: str, fingerprint: str) -> JobRow | None:
        with self.session() as session:
            row = session.get(IdempotencyKeyRow, key)
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise IdempotencyConflict(key)
            return session.scalar(select(JobRow).where(JobRow.id == row.job_id))

    def get(self, job_id: str) -> JobRow | None:
        """The whole row as an ORM object (the driver, the launchers, the write paths)."""
        with self.session() as session:
            return session.scalar(select(JobRow).where(JobRow.id == job_id))

    def get_view(self, job_id: str) -> Row | None:
        """What ``GET /jobs/{id}`` shows (:data:`VIEW_COLUMNS`): one Core SELECT by id, no Session."""
        rows = self._read(_VIEW_BY_ID, {"job_id": job_id})
        return rows[0] if rows else None

    def list(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        optimizer: str | None = None,
        kind: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[Row], int | None]:
        """Newest first; ``cursor`` is the ``seq`` below which to continue. The rows hold the
        summary's columns only (:data:`SUMMARY_COLUMNS`: no spec, no attempts), read with one Core
        SELECT."""
        c = _JOBS.c
        query = select(*SUMMARY_COLUMNS).order_by(c.seq.desc()).limit(limit + 1)
        for column, value in ((c.status, status), (c.task, task), (c.optimizer, optimizer), (c.kind, kind)):
            if value is not None:
                query = query.where(column == value)
        if cursor is not None:
            query = query.where(c.seq < cursor)
        rows = self._read(query)
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
        if "error" in fields:
            fields["error"] = public_error(fields["error"])
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
        """Mark ``attempt`` started, with no lease (tests; launchers use :meth:`claim`)."""
        return self.update(
            job_id,
            only_if_status=("queued", "running"),
            status="running",
            attempt=attempt,
            driver=driver,
            started_at=utcnow(),
            heartbeat_at=None,
            error=None,
        )

    def finish(self, job_id: str, status: str, error: str | None = None, attempt: int | None = None) -> bool:
        """Move a live job to a terminal ``status`` (a cancelled job stays cancelled), in one
        conditional UPDATE. With ``attempt`` (a driver reporting its outcome): only while that
        attempt is the one running, so a driver that was replaced cannot settle its successor."""
        conditions = [JobRow.id == job_id]
        if attempt is None:
            conditions.append(JobRow.status.in_(("queued", "running")))
        else:
            conditions += [JobRow.status == "running", JobRow.attempt == attempt]
        statement = (
            update(JobRow)
            .where(*conditions)
            .values(
                status=status,
                error=public_error(error),
                finished_at=utcnow(),
                updated_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            changed = session.execute(statement).rowcount == 1
            session.commit()
        return changed

    # supervision: leases and heartbeats -------------------------------------------------------

    def claim(
        self,
        job_id: str,
        owner: str,
        ttl: float,
        *,
        when_status: str,
        when_attempt: int,
        steal_from: str | None = None,
        **fields: Any,
    ) -> bool:
        """One compare-and-set UPDATE: while the job is ``when_status`` at ``when_attempt`` and its lease
        is free, ``owner``'s, expired (or ``steal_from``'s, an owner known to be dead), take the
        lease for ``ttl`` seconds and set ``fields`` (which may release it again). Returns whether
        this call won."""
        now = utcnow()
        free = [JobRow.lease_owner.is_(None), JobRow.lease_owner == owner, JobRow.lease_expires_at < now]
        if steal_from is not None:
            free.append(JobRow.lease_owner == steal_from)
        if "error" in fields:
            fields["error"] = public_error(fields["error"])
        values = {"lease_owner": owner, "lease_expires_at": now + timedelta(seconds=ttl), "updated_at": now}
        statement = (
            update(JobRow)
            .where(
                JobRow.id == job_id, JobRow.status == when_status, JobRow.attempt == when_attempt, or_(*free)
            )
            .values(**{**values, **fields})
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            won = session.execute(statement).rowcount == 1
            session.commit()
        return won

    def renew_leases(self, owner: str, ttl: float) -> int:
        """Extend every lease ``owner`` holds on a running job; returns how many."""
        statement = (
            update(JobRow)
            .where(JobRow.lease_owner == owner, JobRow.status == "running")
            .values(
                lease_expires_at=utcnow() + timedelta(seconds=ttl),
                updated_at=JobRow.updated_at,  # not a change a client is told about
            )
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            renewed = session.execute(statement).rowcount
            session.commit()
        return renewed

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        """The driver of ``attempt`` is alive; False once that attempt is no longer the one running."""
        statement = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.attempt == attempt, JobRow.status == "running")
            .values(heartbeat_at=utcnow(), updated_at=JobRow.updated_at)
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            alive = session.execute(statement).rowcount == 1
            session.commit()
        return alive

    def retry(self, job_id: str) -> JobRow | None:
        """A failed or cancelled job back to the queue (its next attempt resumes from what is
        stored); None when it is not failed or cancelled."""
        job = self.get(job_id)
        if job is None or job.status not in ("failed", "cancelled"):
            return None
        reason = f"retried after {job.status}"
        record = {"attempt": job.attempt, "retry": True, "reason": reason, "at": _now()}
        statement = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status == job.status, JobRow.attempt == job.attempt)
            .values(
                status="queued",
                cancel_requested=False,
                error=None,
                finished_at=None,
                driver=None,
                heartbeat_at=None,
                lease_owner=None,
                lease_expires_at=None,
                attempts=[*(job.attempts or []), record],
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            changed = session.execute(statement).rowcount == 1
            session.commit()
        return self.get(job_id) if changed else None

    def request_cancel(self, job_id: str) -> JobRow | None:
        self.update(job_id, only_if_status=("queued", "running"), cancel_requested=True)
        return self.get(job_id)

    # generations and results ------------------------------------------------------------------

    def record_generation(self, job_id: str, record: dict[str, Any]) -> None:
        """Store a finished generation (its GA state included) and move the job's progress.
        Storing the same generation twice keeps the first (a resumed driver may re-send it). A
        generation of a multi-study job names its study (``record["study"]``, tuner.studies)."""
        record = json_safe(record)
        g, study = int(record["generation"]), int(record.get("study", 0))
        finite = [p["fitness"] for p in record["population"] if p["fitness"] is not None]
        best = min(finite) if finite else None
        with self.session() as session:
            exists = session.scalar(
                select(GenerationRow.id).where(
                    GenerationRow.job_id == job_id,
                    GenerationRow.study == study,
                    GenerationRow.generation == g,
                )
            )
            if exists is None:
                session.add(
                    GenerationRow(job_id=job_id, study=study, generation=g, best_fitness=best, record=record)
                )
            job = session.scalar(select(JobRow).where(JobRow.id == job_id))
            job.generation = max(job.generation, g + 1)
            if best is not None and (job.best_fitness is None or best < job.best_fitness):
                job.best_fitness = best
            try:
                session.commit()
            except IntegrityError:
                session.rollback()

    def generations(self, job_id: str) -> list[GenerationRow]:
        """In the order they finished: by study, then generation."""
        query = (
            select(GenerationRow)
            .where(GenerationRow.job_id == job_id)
            .order_by(GenerationRow.study, GenerationRow.generation)
        )
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


def _now() -> str:
    return utcnow().isoformat(timespec="seconds")


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
