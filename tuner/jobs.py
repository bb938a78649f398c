"""The job runner: the one place where a tune, evaluate or reproduce job becomes work.

``run_tune_job``, ``run_evaluate_job`` and ``run_reproduce_job`` take a typed spec
(:mod:`tuner.specs`, :class:`tuner.reproduce.ReproduceJob`) and a
:class:`~tuner.runtime.JobContext` (run directory, runtime, event sink, restart state); the
command line, the service's driver and the benchmarks are thin adapters around them. A tune job
is its strategy's ``tune`` (skipped when ``tuned`` is the hyperparameters document of an earlier
attempt), then, when the job evaluates, the strategy's ``evaluate``. A job of several GA studies
tunes and evaluates each (:mod:`tuner.studies`) and goes on with the median study's document.
Progress and outcomes go to the sink as :mod:`tuner.events`; the documents are also returned and
written to the run directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import events as ev
from .final import plan_for, run_plan
from .runtime import JobContext
from .specs import EvaluateJob, TuneJob
from .strategies import get_strategy
from .studies import run_studies

if TYPE_CHECKING:
    from .reproduce import ReproduceJob


def describe_error(err: BaseException) -> str:
    """An exception in one line for people: its type and message."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _execution(job: TuneJob | EvaluateJob, ctx: JobContext) -> None:
    """The job's choice of how shards run goes to the executor the context makes."""
    ctx.vectorize, ctx.members_per_task = job.vectorize, job.members_per_task


def run_tune_job(job: TuneJob, ctx: JobContext, *, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune (or take ``tuned``), then evaluate; returns ``{"hyperparameters": …, "results": …}``
    (no ``results`` when the job does not evaluate), and ``"studies"`` for a job of several."""
    strategy = get_strategy(job.strategy)
    _execution(job, ctx)
    if ctx.resume and ctx.history is None and not strategy.resumable:
        raise ValueError(
            f"Invalid resume: strategy {job.strategy} cannot resume a run (it starts again; "
            f"resumable: {' | '.join(n for n in ('ga', 'asha') if get_strategy(n).resumable)})"
        )
    try:
        studies = None
        if job.studies > 1:  # ``tuned`` or not: each study reads back what it finished before
            tuned, studies = run_studies(job, strategy, ctx)
        elif tuned is None:
            tuned = strategy.tune(job, ctx)
        ctx.emit(ev.DocumentReady("hyperparameters", tuned))
        documents = {"hyperparameters": tuned}
        if studies is not None:
            documents["studies"] = studies
        if job.evaluate:
            documents["results"] = strategy.evaluate(job, tuned, ctx)
            ctx.emit(ev.DocumentReady("results", documents["results"]))
    except Exception as err:
        ctx.emit(ev.JobFailed(describe_error(err)))
        raise
    finally:
        ctx.close()
    ctx.emit(ev.JobFinished(documents))
    return documents


def run_evaluate_job(
    job: EvaluateJob,
    ctx: JobContext,
    *,
    tuned: Mapping[str, Any] | None = None,
    tuned_source: str = "tuned",
) -> dict[str, Any]:
    """N seeds of each of the job's optimizers (``tuned``: a run's hyperparameters document, whose
    optimizer then runs at its values, labelled ``tuned_source``); returns the results document."""
    _execution(job, ctx)
    try:
        plan = plan_for(job, tuned, tuned_source)
        results = run_plan(plan, ctx)
        ctx.emit(ev.DocumentReady("results", results))
    except Exception as err:
        ctx.emit(ev.JobFailed(describe_error(err)))
        raise
    finally:
        ctx.close()
    ctx.emit(ev.JobFinished({"results": results}))
    return results


def run_reproduce_job(
    job: ReproduceJob, ctx: JobContext, *, log: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """The paper's experiments into the run directory (:mod:`tuner.reproduce`); returns the
    report. A restart reads the finished runs and studies back from the run directory."""
    from .reproduce import reproduce  # it runs tune jobs through this module

    try:
        report = reproduce(ctx.run_dir.root, **job.model_dump(), runtime=ctx.runtime, emit=ctx.emit, log=log)
        ctx.emit(ev.DocumentReady("report", report))
    except Exception as err:
        ctx.emit(ev.JobFailed(describe_error(err)))
        raise
    finally:
        ctx.close()
    ctx.emit(ev.JobFinished({"report": report}))
    return report
