"""The server's limits on what one request may ask for, read from ``LODOTUNE_*`` variables.

A request that would run longer or larger than one machine (or the configured cluster) can ever
serve is refused before any job row exists, as a 422 naming the field and the limit:
``Invalid <field>: <value> (allowed: …, the server's limit LODOTUNE_…)``. The request schemas call
:func:`check_job` from a model validator; the service calls :func:`check_capacity` before it queues
a job (``ServiceBusy`` → 503 with Retry-After). :func:`get_limits` reads the environment once per
process.

A *trial step* is one step of one trial, whatever the strategy: the GA's Σ over generations of
population × (steps + 1) (times its studies), ASHA's num_samples × max_t, one-pass's steps, plus
the final evaluation's seeds × optimizers × its length (of a GA job of several studies: each
study's tuned set and the baselines once).
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select

from schedules import asha as asha_spaces
from tuner import budgets
from tuner.reproduce import (
    EXPERIMENTS,
    AshaExperiment,
    OnePassExperiment,
    ReproduceJob,
    StudiesExperiment,
    asha_job,
    available_task,
    onepass_job,
    studies_jobs,
    untuned_plan,
)
from tuner.specs import EvaluateJob, TuneJob
from tuner.strategies import get_strategy
from tuner.strategies.onepass import resolve_steps

from .models import JobRow

if TYPE_CHECKING:
    from .store import JobStore


def _cpus() -> float:
    return float(os.cpu_count() or 1)


def _gpus() -> float:
    import torch

    return float(torch.cuda.device_count())


class Limits(BaseSettings):
    """What one job may ask for. The defaults fit one machine and accept every paper job (the
    largest, mnist-autoregression with every optimizer as a baseline, is about 4.7e7 trial steps)."""

    model_config = SettingsConfigDict(env_prefix="LODOTUNE_", extra="ignore")

    max_trial_steps: int = Field(
        100_000_000, ge=1, description="Trial steps of one job, all trials together."
    )
    max_steps: int = Field(
        1_000_000,
        ge=2,
        description="Steps of one trial (a GA generation, max_t, one-pass steps, final length).",
    )
    max_population: int = Field(512, ge=2, description="GA individuals per generation.")
    max_generations: int = Field(100, ge=1, description="GA generations.")
    max_num_samples: int = Field(10_000, ge=1, description="ASHA configurations drawn.")
    max_batch_size: int = Field(8192, ge=1, description="The batch_size task option.")
    max_task_options: dict[str, float] = Field(
        default_factory=lambda: {"n": 10_000},
        description='Other numeric task options, as JSON: {"n": 10000} (the bowl\'s dimension).',
    )
    min_step_scale: float = Field(1e-3, gt=0, description="Smallest step_scale.")
    min_cpus_per_trial: float = Field(
        0.25, gt=0, description="Smallest num_cpus_per_trial (0 would run every trial at once)."
    )
    max_cpus_per_trial: float = Field(
        default_factory=_cpus, gt=0, description="CPUs one trial may ask for (default: this machine's)."
    )
    max_gpus_per_trial: float = Field(
        default_factory=_gpus, ge=0, description="GPUs one trial may ask for (default: the GPUs torch sees)."
    )
    max_queued_jobs: int = Field(
        1000, ge=1, description="Queued jobs before POST /tune, /evaluate answer 503."
    )
    retry_after_s: int = Field(30, ge=1, description="The Retry-After of a 503 when the queue is full.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body (413 above).")
    max_event_streams: int = Field(
        64, ge=1, description="Open GET /jobs/{id}/events streams (503 above): each polls the store."
    )


@cache
def get_limits() -> Limits:
    """The process's limits, read from the environment on first use."""
    return Limits()


class ServiceBusy(Exception):
    """The queue is full: answer 503 with ``Retry-After: retry_after``."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_capacity(store: JobStore, limits: Limits | None = None) -> None:
    """Raise :class:`ServiceBusy` when ``LODOTUNE_MAX_QUEUED_JOBS`` jobs are already waiting (queued,
    no cancel asked)."""
    limits = limits or get_limits()
    with store.session() as session:
        # a queued job asked to cancel is on its way out (the launcher settles it on its next pass)
        waiting = (JobRow.status == "queued") & ~JobRow.cancel_requested
        queued = session.scalar(select(func.count()).select_from(JobRow).where(waiting))
    if queued >= limits.max_queued_jobs:
        raise ServiceBusy(
            f"Service busy: {queued} jobs are queued (allowed: fewer than {limits.max_queued_jobs}, "
            f"the server's limit LODOTUNE_MAX_QUEUED_JOBS); retry later",
            limits.retry_after_s,
        )


def _fail(field: str, value: Any, allowed: str, env: str) -> None:
    raise ValueError(f"Invalid {field}: {value!r} (allowed: {allowed}, the server's limit LODOTUNE_{env})")


def _at_most(field: str, value: Any, limit: float, env: str, unit: str = "") -> None:
    if value > limit:
        _fail(field, value, f"at most {_number(limit)}{unit}", env)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def check_job(job: TuneJob | EvaluateJob | ReproduceJob, limits: Limits | None = None) -> None:
    """Refuse a validated job (``TuneRequest`` / ``EvaluateRequest`` / ``ReproduceRequest``) that
    exceeds ``limits``: a ``ValueError`` in the house form, naming the field and the ``LODOTUNE_*``
    limit."""
    limits = limits or get_limits()
    if isinstance(job, ReproduceJob):
        _check_reproduce(job, limits)
        return
    if job.step_scale < limits.min_step_scale:
        _fail("step_scale", job.step_scale, f"at least {limits.min_step_scale!r}", "MIN_STEP_SCALE")
    _check_task_options(job.task_options, limits)
    if isinstance(job, TuneJob):
        _check_resources(job, limits)
        tuning, evaluation = _TUNE_COSTS.get(job.strategy, _no_cost)(job, limits)
    else:
        length = job.length()
        if job.steps is not None:
            _check_length("steps", job.steps, length, limits)
        else:
            _check_length("step_scale", job.step_scale, length, limits)
        tuning, evaluation = (0, ""), _evaluation(job.seeds, job.optimizers, length)
    total = tuning[0] + evaluation[0]
    if total > limits.max_trial_steps:
        parts = " + ".join(p for p in (tuning[1], evaluation[1]) if p)
        raise ValueError(
            f"Invalid job size: {total} trial steps = {parts} (allowed: at most {limits.max_trial_steps} "
            "trial steps in all of a job's trials; fewer generations, individuals, samples, seeds or a "
            "smaller step_scale, the server's limit LODOTUNE_MAX_TRIAL_STEPS)"
        )


def _check_reproduce(job: ReproduceJob, limits: Limits) -> None:
    """A reproduce job counted as the jobs it runs: each studies experiment's tune jobs (as any GA
    job of studies is counted) and each evaluation experiment's seeds × optimizers × steps."""
    sizes = {}
    for name in job.experiments:  # the validated job lists them all
        experiment = EXPERIMENTS[name]
        if isinstance(experiment, StudiesExperiment):
            tune_jobs = studies_jobs(experiment, scale=job.scale, seeds=job.seeds, studies=job.studies)
            costs = [_ga_cost(tune_job, limits) for tune_job in tune_jobs.values()]
            sizes[name] = sum(tuning[0] + evaluation[0] for tuning, evaluation in costs)
        elif isinstance(experiment, AshaExperiment | OnePassExperiment):
            sizes[name] = _clarke_size(experiment, job, limits)
        else:
            seeds = job.seeds or experiment.seeds[job.scale]
            running = experiment.running(job.scale)
            sizes[name] = _evaluation(seeds, running, experiment.steps[job.scale])[0]
    total = sum(sizes.values())
    if total > limits.max_trial_steps:
        parts = " + ".join(f"{name} {steps}" for name, steps in sizes.items())
        raise ValueError(
            f"Invalid experiments: {total} trial steps = {parts} at {job.scale} scale (allowed: at most "
            f"{limits.max_trial_steps} trial steps in all of a job's runs; fewer experiments, seeds or "
            "studies, the server's limit LODOTUNE_MAX_TRIAL_STEPS)"
        )


def _clarke_size(experiment: AshaExperiment | OnePassExperiment, job: ReproduceJob, limits: Limits) -> int:
    """An AdamQLR- or one-pass-paper experiment as the tune job it runs (counted as any such job),
    plus the untuned runs of an ASHA experiment; nothing where no task's data is here."""
    task, _ = available_task(experiment.tasks)
    if task is None:
        return 0
    if isinstance(experiment, OnePassExperiment):
        tune_job = onepass_job(experiment, task, scale=job.scale, seeds=job.seeds)
        tuning, evaluation = _onepass_cost(tune_job, limits)
        return tuning[0] + evaluation[0]
    tune_job = asha_job(experiment, task, scale=job.scale, seeds=job.seeds)
    tuning, evaluation = _asha_cost(tune_job, limits)
    untuned = untuned_plan(experiment, tune_job)
    return tuning[0] + evaluation[0] + untuned.seeds * untuned.steps


def _check_task_options(options: dict[str, Any], limits: Limits) -> None:
    caps = {name: (cap, "MAX_TASK_OPTIONS") for name, cap in limits.max_task_options.items()}
    caps["batch_size"] = (limits.max_batch_size, "MAX_BATCH_SIZE")
    for name, value in options.items():
        if name in caps and isinstance(value, int | float) and not isinstance(value, bool):
            cap, env = caps[name]
            _at_most(f"task_options.{name}", value, cap, env)


def _check_resources(job: TuneJob, limits: Limits) -> None:
    cpus, gpus = job.num_cpus_per_trial, job.num_gpus_per_trial
    if not limits.min_cpus_per_trial <= cpus <= limits.max_cpus_per_trial:
        raise ValueError(
            f"Invalid num_cpus_per_trial: {cpus!r} (allowed: from {_number(limits.min_cpus_per_trial)} to "
            f"{_number(limits.max_cpus_per_trial)}, the CPUs a trial can ever get here, the server's limits "
            "LODOTUNE_MIN_CPUS_PER_TRIAL and LODOTUNE_MAX_CPUS_PER_TRIAL)"
        )
    if gpus > limits.max_gpus_per_trial:
        none = " (this server has no GPU)" if limits.max_gpus_per_trial == 0 else ""
        _fail(
            "num_gpus_per_trial",
            gpus,
            f"at most {_number(limits.max_gpus_per_trial)}{none}",
            "MAX_GPUS_PER_TRIAL",
        )


def _check_length(field: str, value: Any, length: int, limits: Limits) -> None:
    """One trial's length, blamed on the field that set it (a custom schedule: the schedule)."""
    if length > limits.max_steps:
        shown = "a schedule" if field.endswith("custom_schedule") else repr(value)
        raise ValueError(
            f"Invalid {field}: {shown} gives trials of {length} steps (allowed: at most "
            f"{limits.max_steps} steps per trial, the server's limit LODOTUNE_MAX_STEPS)"
        )


def _evaluation(seeds: int, optimizers: list[str], length: int) -> tuple[int, str]:
    runs = seeds * len(optimizers)
    return runs * length, f"evaluation {seeds} seeds × {len(optimizers)} optimizers × {length} steps"


def _final(job: TuneJob, length: int) -> tuple[int, str]:
    if not job.evaluate:
        return (0, "")
    if job.studies == 1:
        return _evaluation(job.seeds, job.optimizers(), length)
    # each study evaluates its tuned set; the job's evaluation reads the median study's runs back
    # and runs the baselines once (tuner.studies)
    runs = job.seeds * (job.studies + len(job.baselines))
    parts = f"{job.studies} studies + {len(job.baselines)} baselines"
    return runs * length, f"evaluation {job.seeds} seeds × ({parts}) × {length} steps"


def _ga_cost(job: TuneJob, limits: Limits) -> tuple[tuple[int, str], tuple[int, str]]:
    options = job.options
    schedule = get_strategy("ga").config(job).schedule  # validated already: this cannot raise
    custom = "strategy_options.custom_schedule" if options.custom_schedule is not None else None

    def field(name: str, override: Any) -> str:
        return f"strategy_options.{name}" if override is not None or custom is None else custom

    _at_most(
        field("population", options.population), schedule.population, limits.max_population, "MAX_POPULATION"
    )
    generations = len(schedule.generations)
    _at_most(
        field("generations", options.generations), generations, limits.max_generations, "MAX_GENERATIONS"
    )
    longest = max(max(g.steps for g in schedule.generations) + 1, schedule.final_steps)
    _check_length(custom or "step_scale", job.step_scale, longest, limits)
    steps = job.studies * sum(schedule.population * (g.steps + 1) for g in schedule.generations)
    tuning = f"tuning {generations} generations × {schedule.population} individuals × (steps + 1)"
    if job.studies > 1:
        tuning = f"{tuning} × {job.studies} studies"
    return (steps, tuning), _final(job, schedule.final_steps)


def _asha_cost(job: TuneJob, limits: Limits) -> tuple[tuple[int, str], tuple[int, str]]:
    """Every search (the optimizer's and each tuned baseline's) at its longest trial: the budget
    in loss evaluations at the smallest batch and two evaluations an update. A seconds budget is
    bounded by its clock: its trials count no steps here."""
    options = job.options
    _at_most("strategy_options.num_samples", options.num_samples, limits.max_num_samples, "MAX_NUM_SAMPLES")
    strategy = get_strategy("asha")
    config = strategy.config(job)
    searches = 1 + len(strategy.tuned_baselines(job))
    batch = None
    if budgets.has_batches(job.task):
        fixed = "batch_size" in job.task_options or not options.tune_batch_size
        smallest = budgets.default_batch_size(job.task, dict(job.task_options))
        batch = smallest if fixed else min(smallest, *asha_spaces.batch_sizes())
    length = budgets.most_evaluations(config.budget, config.max_t, batch)
    if length is None:
        return (0, f"tuning {searches} × {options.num_samples} samples × {config.max_t} s"), (0, "")
    field = "strategy_options.max_t" if options.max_t is not None else "step_scale"
    _check_length(field, options.max_t or job.step_scale, length, limits)
    tuning = f"tuning {searches} × {options.num_samples} samples × {length} steps"
    return (searches * options.num_samples * length, tuning), _final(job, length)


def _onepass_cost(job: TuneJob, limits: Limits) -> tuple[tuple[int, str], tuple[int, str]]:
    options = job.options
    if options.steps is not None:
        steps = options.steps
        _at_most("strategy_options.steps", steps, limits.max_steps, "MAX_STEPS")
    else:
        steps, _ = resolve_steps(job.task, None, job.step_scale)
        _check_length("step_scale", job.step_scale, steps, limits)
    k = options.initialisations
    # K initialisations, each trained by one-pass and by the Random baseline
    evaluation = (2 * k * steps, f"evaluation 2 methods × {k} initialisations × {steps} steps")
    return (steps, f"tuning {steps} steps"), evaluation if job.evaluate else (0, "")


def _no_cost(job: TuneJob, limits: Limits) -> tuple[tuple[int, str], tuple[int, str]]:
    return (0, ""), (0, "")


_TUNE_COSTS = {"ga": _ga_cost, "asha": _asha_cost, "onepass": _onepass_cost}
