"""Request and response bodies. A request is the tuner's typed job spec (:mod:`tuner.specs`) plus
what only the service needs (the Idempotency-Key fingerprint, ``from_job``), so a bad name or bound
is a 422 naming the field before any job row exists, checked by the same models the command line
uses."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.final import plan_for
from tuner.specs import EvaluateJob, TuneJob

JobKind = Literal["tune", "evaluate"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL = ("succeeded", "failed", "cancelled")

# The GA's settings, accepted at the top of a body as before they moved into strategy_options.
GA_FIELDS = ("schedule", "generations", "population", "normalization", "decay_transform")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self, kind: str) -> str:
        """SHA-256 of the canonical body: what an Idempotency-Key is bound to."""
        body = json.dumps({"kind": kind, **self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


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


class EvaluateRequest(_Request, EvaluateJob):
    """N seeds of each optimizer at the task's final length, with given, tuned or paper values."""

    from_job: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Use the tuned values of this finished tune job."
    )

    @model_validator(mode="after")
    def _paper_values_exist(self) -> EvaluateRequest:
        if self.from_job is None:
            plan_for(self)  # Table 6 rows for every optimizer not given, else a ValueError naming it
        return self


class Progress(BaseModel):
    generation: int = Field(description="Generations finished.")
    generations: int | None = Field(description="Generations in the schedule (None before the start).")
    trials_done: int = Field(description="Trials finished in the current generation or phase.")
    trials_total: int | None
    best_fitness: float | None = Field(description="Lowest finite fitness seen so far.")
    phase: str | None = Field(description="tuning | evaluation")


class Job(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    task: str
    optimizer: str
    strategy: str | None
    attempt: int
    launcher: str
    driver: str | None = Field(description="The driver's process id or Ray submission id.")
    progress: Progress
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    spec: dict[str, Any]
    links: dict[str, str]


class JobPage(BaseModel):
    jobs: list[Job]
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
