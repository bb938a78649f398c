"""Request and response bodies. A request is the tuner's typed job spec (:mod:`tuner.specs`) plus
what only the service needs (the Idempotency-Key fingerprint, ``from_job``), so a bad name or bound
is a 422 naming the field before any job row exists, checked by the same models the command line
uses."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from tuner.final import plan_for
from tuner.reproduce import ReproduceJob
from tuner.specs import EvaluateJob, TuneJob

from .limits import check_job

JobKind = Literal["tune", "evaluate", "reproduce"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL = ("succeeded", "failed", "cancelled")

# The GA's settings, accepted at the top of a body as before they moved into strategy_options.
GA_FIELDS = ("schedule", "generations", "population", "normalization", "decay_transform")
# Validation context of a spec the service stored itself (the driver re-reading its job): the
# server's limits and the input checks were applied when it was accepted, and a limit lowered
# since must not fail a job already queued or running.
STORED_SPEC = {"stored_spec": True}
_NOT_FINITE = frozenset({"nan", "inf", "infinity"})


def _path(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) or "body"


def _bad_text(text: str) -> str | None:
    """Why a request string cannot be stored (PostgreSQL refuses NUL and lone surrogates; NaN and
    infinity are no JSON numbers), or None."""
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate"
    if text.strip().lower().lstrip("+-") in _NOT_FINITE:
        return "NaN or infinity spelt as a string"
    return None


def check_input(data: Any) -> None:
    """Refuse, naming the field, what no store may hold: NaN and ±Infinity (as numbers or as
    strings), NUL characters and lone surrogates in any string or key; and ``task_options.data_dir``
    (the data directory is the server's setting, never a path a client chooses)."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"Invalid {_path(path)}: {value!r} (allowed: a finite number)")
        if isinstance(value, str) and (why := _bad_text(value)):
            raise ValueError(f"Invalid {_path(path)}: {why} (allowed: finite numbers and plain text)")
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and (why := _bad_text(key)):
                    raise ValueError(f"Invalid key in {_path(path)}: {why} (allowed: plain text)")
                stack.append(((*path, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, i), item) for i, item in enumerate(value))
    options = data.get("task_options") if isinstance(data, dict) else None
    if isinstance(options, dict) and "data_dir" in options:
        raise ValueError(
            "Invalid task_options.data_dir: the data directory is the server's setting (LODOTUNE_DATA_DIR)"
        )


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored_spec"))


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self, kind: str) -> str:
        """SHA-256 of the canonical body: what an Idempotency-Key is bound to."""
        body = json.dumps({"kind": kind, **self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    @model_validator(mode="after")
    def _within_the_server_limits(self, info: ValidationInfo) -> _Request:
        if not _stored(info):
            check_job(self)  # api.limits: LODOTUNE_MAX_* (a ValueError naming the field)
        return self


class TuneRequest(_Request, TuneJob):
    """A tuning job: the LODO paper's GA by default (10 × 32 on the paper schedules). The GA's
    settings go in ``strategy_options`` (``{"schedule": "paper"}``), or at the top as before."""

    @model_validator(mode="before")
    @classmethod
    def _ga_fields_at_the_top(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(k in data for k in GA_FIELDS):
            return data
        strategy = data.get("strategy", "ga")
        given = [k for k in GA_FIELDS if k in data]
        if strategy != "ga":
            raise ValueError(
                f"Invalid {given[0]}: a setting of strategy ga (this job's strategy: {strategy!r})"
            )
        options = data.get("strategy_options") or {}
        if not isinstance(options, dict):
            return data
        both = [k for k in given if k in options]
        if both:
            raise ValueError(f"Invalid {both[0]}: given both at the top and in strategy_options")
        rest = {k: v for k, v in data.items() if k not in GA_FIELDS}
        return {**rest, "strategy_options": {**options, **{k: data[k] for k in given if data[k] is not None}}}

    @model_validator(mode="before")
    @classmethod
    def _storable_input(cls, data: Any, info: ValidationInfo) -> Any:  # defined last: runs first
        if not _stored(info):
            check_input(data)
        return data


class _PlainRequest(_Request):
    """A request whose input is checked for storability before anything else (a tune request
    checks it after moving the GA's top-level fields, :class:`TuneRequest`)."""

    @model_validator(mode="before")
    @classmethod
    def _storable_input(cls, data: Any, info: ValidationInfo) -> Any:
        if not _stored(info):
            check_input(data)
        return data


class EvaluateRequest(_PlainRequest, EvaluateJob):
    """N seeds of each optimizer at the task's final length, with given, tuned or paper values."""

    from_job: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Use the tuned values of this finished tune job."
    )

    @model_validator(mode="after")
    def _paper_values_exist(self) -> EvaluateRequest:
        if self.from_job is None:
            plan_for(self)  # Table 6 rows for every optimizer not given, else a ValueError naming it
        return self


class ReproduceRequest(_PlainRequest, ReproduceJob):
    """The paper's experiments with Table 6 values beside its numbers (``lodotune reproduce``):
    the report at ``GET /jobs/{id}/report``, report.md and the plots among the artifacts."""


class Progress(BaseModel):
    generation: int = Field(description="Generations finished.")
    generations: int | None = Field(description="Generations in the schedule (None before the start).")
    trials_done: int = Field(description="Trials finished in the current generation or phase.")
    trials_total: int | None
    best_fitness: float | None = Field(description="Lowest finite fitness seen so far.")
    phase: str | None = Field(description="tuning | evaluation")
    study: int | None = Field(
        description="A job of several studies: the study running (0-based, as in studies.json); None "
        "while none is (the job's own evaluation) and in a job of one."
    )
    studies: int | None = Field(description="A job of several studies: how many; None in a job of one.")


class JobSummary(BaseModel):
    """A job in a ``GET /jobs`` page: what a listing shows. ``GET /jobs/{id}`` (``links.self``) has
    the whole document: spec, attempts, launcher, driver and the other links."""

    id: str
    kind: JobKind
    status: JobStatus
    task: str
    optimizer: str
    strategy: str | None
    attempt: int
    progress: Progress
    error: str | None = Field(description="One line: why the job failed.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: dict[str, str] = Field(description='Only "self": the job\'s URL (its whole document).')


class Job(JobSummary):
    """The whole job (``GET /jobs/{id}``): a summary's fields, the spec, the driver and its lost
    attempts, and every link."""

    launcher: str
    driver: str | None = Field(description="The driver's process id or Ray submission id.")
    attempts: list[dict[str, Any]] = Field(
        default_factory=list, description="Attempts whose driver was lost: attempt, reason, charged, at."
    )
    cancel_requested: bool
    spec: dict[str, Any]
    links: dict[str, str]


class JobPage(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


class Accepted(BaseModel):
    id: str
    status: JobStatus
    links: dict[str, str]


class GenerationRecord(BaseModel):
    generation: int
    best_fitness: float | None
    elite_mean: dict[str, Any]
    record: dict[str, Any] = Field(description="The generation file the CLI writes, GA state included.")


class Error(BaseModel):
    detail: Any
