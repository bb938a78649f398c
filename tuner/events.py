"""The one event vocabulary of a job, whatever its strategy: what the runner tells its sink.

A job emits, in order: ``PhaseStarted("tuning")``; per GA generation ``GenerationStarted``, then
``TrialFinished`` per trial and ``Checkpoint`` (the generation record, GA state included); per
ASHA trial ``TrialFinished``; per one-pass hyperparameter update ``Checkpoint``; then
``DocumentReady("hyperparameters")``, ``PhaseStarted("evaluation")``, ``EvaluationRunFinished``
per run, ``DocumentReady("results")``; and last ``JobFinished`` or ``JobFailed``. A job of K GA
studies (:mod:`tuner.studies`) runs, per study, ``StudyStarted``, that study's tuning events and its
evaluation's (``PhaseStarted("evaluation")`` … ``EvaluationRunFinished``), ``StudyFinished``; then
``DocumentReady("hyperparameters")`` (the median study's) and the job's evaluation as above.

A sink is called synchronously in the job's process: what it does with an event (draw a progress
bar, commit a row) is done before the job goes on, so a store written from ``Checkpoint`` holds a
generation the moment it finishes. A sink may raise to stop the job (a cancel request): the
exception propagates out of the runner unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["tuning", "evaluation"]
Status = Literal["ok", "diverged", "error"]


@dataclass(frozen=True)
class PhaseStarted:
    phase: Phase
    strategy: str
    total: int | None  # units of work in the phase (generations, trials, updates, runs)
    unit: str  # what ``total`` counts


@dataclass(frozen=True)
class GenerationStarted:
    generation: int
    of: int
    sigma: float
    steps: int
    population: int


@dataclass(frozen=True)
class TrialFinished:
    """A tuning trial (a GA individual, an ASHA trial) finished, whatever its status."""

    index: int  # the individual's index, or the ASHA trial's position in finishing order
    of: int
    status: Status
    values: dict[str, float]
    error: str | None = None
    generation: int | None = None  # GA only
    metrics: dict[str, float] = field(default_factory=dict)  # the trained model's (task.metrics())
    record: dict[str, Any] = field(default_factory=dict)  # the strategy's own record of the trial


@dataclass(frozen=True)
class Checkpoint:
    """A unit of tuning is done and stored: a GA generation (``record`` is its generations/NNN.json
    document, from which the job resumes; in a multi-study job with ``"study": k`` added, the file
    being ``studies/<k>/generations/NNN.json``) or a one-pass hyperparameter update."""

    kind: Literal["generation", "update"]
    index: int
    of: int
    record: dict[str, Any]
    best: float | None = None  # the generation's best finite fitness
    summary: str = ""  # one line for people


@dataclass(frozen=True)
class EvaluationRunFinished:
    index: int
    of: int
    optimizer: str
    seed: int
    status: Status
    error: str | None = None
    reused: bool = False  # finished before a restart and read back


@dataclass(frozen=True)
class StudyStarted:
    """Study ``study`` (0-based, ``RUN_DIR/studies/<study>/``) of ``of`` independent GA runs starts,
    or is read back after a restart."""

    study: int
    of: int
    seed: int  # the job seed of the study's GA run


@dataclass(frozen=True)
class StudyFinished:
    """A study is tuned and its tuned set evaluated over the job's seeds."""

    study: int
    of: int
    window_loss: float | None  # mean window loss of its evaluation; None: no finite run
    summary: str  # one line for people


@dataclass(frozen=True)
class DocumentReady:
    """A finished document, also written to the run directory."""

    name: Literal["hyperparameters", "results"]
    document: dict[str, Any]


@dataclass(frozen=True)
class JobFinished:
    documents: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class JobFailed:
    error: str  # one line: the exception's type and message


Event = (
    PhaseStarted
    | GenerationStarted
    | TrialFinished
    | Checkpoint
    | EvaluationRunFinished
    | StudyStarted
    | StudyFinished
    | DocumentReady
    | JobFinished
    | JobFailed
)
EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The sink that does nothing."""
