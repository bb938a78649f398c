"""The job store's tables (SQLAlchemy 2 declarative). Alembic's migrations create them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, datetime: UTCDateTime}


class JobRow(Base):
    __tablename__ = "jobs"

    # seq orders jobs and pages them (a cursor is the last seq seen); id is the public name.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    optimizer: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str | None] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    attempt: Mapped[int] = mapped_column(default=0)
    launcher: Mapped[str] = mapped_column(String(16))
    driver: Mapped[str | None] = mapped_column(String(128))
    run_dir: Mapped[str] = mapped_column(Text)
    phase: Mapped[str | None] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(default=0)
    generations: Mapped[int | None]
    trials_done: Mapped[int] = mapped_column(default=0)
    trials_total: Mapped[int | None]
    # a job of several GA studies (tuner.studies): the study running (0-based; None between
    # studies and after the last) and how many; both None in a job of one
    study: Mapped[int | None]
    studies: Mapped[int | None]
    best_fitness: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # supervision (api/launchers.py): the driver's last sign of life, the API process that owns
    # the job until lease_expires_at, and one record per attempt that lost its driver
    heartbeat_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class GenerationRow(Base):
    """A finished GA generation; ``study``: its study in a job of several (its record's
    ``"study"``), 0 in a job of one."""

    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("job_id", "study", "generation", name="uq_generations_job_id_study_generation"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    study: Mapped[int] = mapped_column(default=0, server_default="0")
    generation: Mapped[int]
    best_fitness: Mapped[float | None] = mapped_column(Float)
    record: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResultRow(Base):
    """A finished document of a job: ``hyperparameters`` (tuned set) or ``results`` (evaluation)."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKeyRow(Base):
    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
