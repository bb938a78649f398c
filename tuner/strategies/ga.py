"""The ``ga`` strategy: the LODO paper's genetic algorithm (lodo.md §3), generation by generation.

``tune(config, ctx)`` asks the GA (:mod:`tuner.ga`) for a population, runs it through the job's
executor, tells the GA the fitnesses and checkpoints the generation before asking for the next:
a ``Checkpoint`` event (the service stores it) and ``RUN_DIR/generations/NNN.json``. A resumed
run continues after the last finished generation (from the store's records when it has them,
else from the files) and, because every seed derives from (job seed, generation, individual) and
the GA state is stored exactly, ends with exactly the result an uninterrupted run gives.

A trial that raises is an error, not a divergence: it takes no place in the elite, the
generation record counts it, and a generation in which every trial raised fails the job with the
first error (the GA would otherwise go on with its defaults as if they had been tuned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import lodo
import schedules
import tasks as task_registry
from schedules._errors import validated

from .. import events as ev
from .. import final, ga, plots
from ..rundir import RunDir, versions, write_json
from ..trial import TrialResult, TrialSpec
from .base import AllTrialsFailed, StrategyOptions, Summary

if TYPE_CHECKING:
    from ..runtime import JobContext
    from ..specs import TuneJob

CONFIG_VERSION = 1
# logit cannot encode a decay of exactly 0 or 1 (momentum defaults to 0): start just inside.
LOGIT_MARGIN = 1e-3


class GaOptions(StrategyOptions):
    """The GA's schedule and search space: the task's shipped schedule (``code``: the authors'
    code, ``paper``: Table 5) with optional overrides, or a custom one given as data."""

    name = "ga"
    strategy: Literal["ga"] = "ga"
    schedule: Literal["code", "paper"] = "code"
    generations: int | None = Field(None, ge=1, le=1000, description="Override the schedule's generations.")
    population: int | None = Field(None, ge=2, le=4096, description="Override the population size.")
    normalization: Literal["code", "paper"] = Field(
        "code", description="code: decays by name, as the authors; paper: by role."
    )
    decay_transform: Literal["log1m", "logit"] = "log1m"
    custom_schedule: dict[str, Any] | None = Field(
        None, description="A whole schedule document (as `lodotune tune --schedule-file` reads)."
    )
    custom_space: dict[str, Any] | None = Field(
        None, description="A whole search-space document (as `lodotune tune --space-file` reads)."
    )


@dataclass(frozen=True)
class TuneConfig:
    """Everything that defines a GA run's outcome (and nothing about where it runs)."""

    task: str
    optimizer: str
    schedule: Any  # schedules.Schedule
    space: Any  # schedules.SearchSpace
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    optimizer_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in task_registry.TASK_NAMES:
            raise ValueError(f"Unknown task {self.task!r} (allowed: {' | '.join(task_registry.TASK_NAMES)})")
        spec = lodo.get(self.optimizer)
        if tuple(self.space.names) != spec.names:
            raise ValueError(
                f"Invalid search space: names {list(self.space.names)} (allowed: exactly the "
                f"hyperparameters of {self.optimizer}: {list(spec.names)})"
            )
        if not spec.names:
            raise ValueError(f"Invalid optimizer: {self.optimizer} has no hyperparameters to tune")
        spec.check_options(self.optimizer_options)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": CONFIG_VERSION,
            "task": self.task,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "task_options": dict(self.task_options),
            "device": self.device,
            "schedule": self.schedule.model_dump(mode="json"),
            "space": self.space.model_dump(mode="json"),
        }
        if self.optimizer_options:  # absent when unset, so older run directories still resume
            out["optimizer_options"] = dict(self.optimizer_options)
        return out


def starting_values(space, defaults: dict[str, float]) -> dict[str, float]:
    """Generation 0's centre: the defaults, moved inside (0, 1) where the transform is logit."""
    return {
        name: min(max(value, LOGIT_MARGIN), 1 - LOGIT_MARGIN) if space.transforms[name] == "logit" else value
        for name, value in defaults.items()
    }


def tune(config: TuneConfig, ctx: JobContext) -> dict[str, Any]:
    """Run (or continue) the GA; returns the hyperparameters document, also written to the run dir."""
    run_dir, emit = ctx.run_dir, ctx.emit
    run_dir.claim(config.to_dict(), resume=ctx.resume, stored=ctx.history is not None)
    finished = _finished_generations(run_dir, ctx.history)
    schedule, space = config.schedule, config.space
    if finished:
        state = ga.GAState.from_dict(finished[-1]["state"])
    else:
        state = ga.init(space, starting_values(space, lodo.get(config.optimizer).defaults), config.seed)
    total = len(schedule.generations)
    emit(ev.PhaseStarted("tuning", "ga", total, "generations"))
    while state.generation < total:
        g = state.generation
        gen = schedule.generations[g]
        emit(ev.GenerationStarted(g, total, gen.sigma, gen.steps, schedule.population))
        population = ga.ask(state, space, gen.sigma, schedule.population)
        specs = [
            TrialSpec(
                config.task,
                config.optimizer,
                ind.values,
                seed=ind.seed,
                steps=gen.steps + 1,
                task_options=dict(config.task_options),
                device=config.device,
                optimizer_options=dict(config.optimizer_options),
            )
            for ind in population
        ]

        def on_trial(index: int, result: TrialResult, g=g) -> None:
            emit(
                ev.TrialFinished(
                    index,
                    schedule.population,
                    result.status,
                    result.spec.hyperparameters,
                    error=result.error,
                    generation=g,
                    metrics=result.metrics,
                )
            )

        results = ctx.executor().map(specs, on_trial)
        if all(r.status == "error" for r in results):
            raise AllTrialsFailed(
                f"every trial of generation {g} raised an error, the first: {results[0].error}"
            )
        told = ga.tell(state, space, population, [ga.fitness(r.losses, gen.steps) for r in results])
        record = _generation_record(g, gen, population, results, told, space)
        finite = [f for f in told.fitnesses if math.isfinite(f)]
        errors = record["errors"]
        emit(
            ev.Checkpoint(
                "generation",
                g,
                total,
                record,
                best=min(finite) if finite else None,
                summary=_generation_line(g, finite, space.decode(told.state.mean), told.all_diverged, errors),
            )
        )
        write_json(run_dir.generation_path(g), record)
        state = told.state

    document = {
        "strategy": "ga",
        "task": config.task,
        "optimizer": config.optimizer,
        "hyperparameters": ga.result(state, space),
        "normalized_mean": dict(state.mean),
        "transforms": {p.name: p.transform for p in space.params},
        "normalization": space.normalization,
        "schedule": schedule.model_dump(mode="json"),
        "job_seed": config.seed,
        "trial_seeds": "derived from (job seed, generation, individual); stored in generations/NNN.json",
        "diverged_generations": list(state.diverged_generations),
        "task_options": dict(config.task_options),
        "optimizer_options": dict(config.optimizer_options),
        "versions": versions(),
    }
    write_json(run_dir.hyperparameters_path, document)
    plots.plot_search(
        [run_dir.finished_generations()],
        run_dir.search_plot_path,
        title=f"{config.task}: GA search of {config.optimizer} (seed {config.seed})",
    )
    return document


def _finished_generations(run_dir: RunDir, history) -> list[dict[str, Any]]:
    """The records to continue from: the store's when it holds the job (the files are rewritten
    from them, as the run directory is its artifact cache), else the run directory's."""
    if history is None:
        return run_dir.finished_generations()
    records = sorted(history, key=lambda r: r["generation"])
    if [r["generation"] for r in records] != list(range(len(records))):
        raise ValueError(
            f"Invalid stored generations: {[r['generation'] for r in records]} (allowed: 0, 1, …)"
        )
    for record in records:
        write_json(run_dir.generation_path(record["generation"]), record)
    return records


def _generation_line(
    g: int, finite: list[float], mean: dict[str, float], all_diverged: bool, errors: int
) -> str:
    best = f"{min(finite):.6g}" if finite else "none (no finite fitness)"
    values = ", ".join(f"{k}={v:.4g}" for k, v in mean.items())
    flags = " (all diverged: mean kept)" if all_diverged else ""
    flags += f" ({errors} trials raised an error)" if errors else ""
    return f"generation {g + 1}: best fitness {best}, elite mean {values}{flags}"


def _execution_summary(results: list[TrialResult]) -> dict[str, Any]:
    """How the generation ran: vectorized trials and the sizes of their shards, the others alone."""
    sizes = [r.execution["members"] for r in results if r.execution and r.execution.get("vectorized")]
    # every member carries its shard's size: k shards of size s leave k·s members saying s
    shard_sizes = [
        size for size in sorted(set(sizes), reverse=True) for _ in range(sizes.count(size) // size)
    ]
    return {"vectorized": len(sizes), "alone": len(results) - len(sizes), "shard_sizes": shard_sizes}


def _generation_record(g, gen, population, results, told, space) -> dict[str, Any]:
    return {
        "generation": g,
        "sigma": gen.sigma,
        "steps": gen.steps,
        "population": [
            {
                "index": ind.index,
                "seed": ind.seed,
                "coords": ind.coords,
                "values": ind.values,
                "fitness": fit if math.isfinite(fit) else None,  # None: diverged or error (+inf)
                "status": res.status,
                "diverged": res.diverged,
                "error": res.error,
                "wall_time": res.wall_time,
                "execution": res.execution,
            }
            for ind, res, fit in zip(population, results, told.fitnesses, strict=True)
        ],
        "diverged": sum(r.status == "diverged" for r in results),
        "errors": sum(r.status == "error" for r in results),
        "execution": _execution_summary(results),
        "elite": told.elite,
        "all_diverged": told.all_diverged,
        "elite_mean": {"coords": dict(told.state.mean), "values": space.decode(told.state.mean)},
        "state": told.state.to_dict(),
    }


class GeneticAlgorithm:
    """The registry's ``ga`` entry."""

    name = "ga"
    summary_line = "the LODO paper's genetic algorithm (lodo.md §3), one checkpoint per generation"
    Options = GaOptions
    resumable = True
    default_seeds = 8  # lodo.md §3.6
    tunes_optimizer = True

    def config(self, job: TuneJob) -> TuneConfig:
        options: GaOptions = job.options
        if options.custom_schedule is not None:
            plan = validated(schedules.Schedule, options.custom_schedule, "custom_schedule")
        else:
            plan = schedules.schedule_for(job.task, options.schedule)
        plan = plan.scaled(job.step_scale).with_overrides(
            generations=options.generations, population=options.population
        )
        if options.custom_space is not None:
            space = validated(schedules.SearchSpace, options.custom_space, "custom_space")
        else:
            space = schedules.space_for(
                job.optimizer, normalization=options.normalization, decay_transform=options.decay_transform
            )
        return TuneConfig(
            job.task,
            job.optimizer,
            plan,
            space,
            seed=job.seed,
            task_options=dict(job.task_options),
            device=job.device,
            optimizer_options=final.optimizer_options(job.optimizer, job.meta_dtype),
        )

    def check(self, job: TuneJob) -> None:
        self.config(job)

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]:
        return tune(self.config(job), ctx)

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """The schedule's final length, its halving (lodo.md §3.5) applied to the tuned values and
        to the baselines' Table 6 values alike."""
        schedule = schedules.Schedule.model_validate(document["schedule"])
        plan = final.plan_after_tuning(
            job,
            document,
            schedule=schedule,
            steps=schedule.final_steps,
            step_scale=schedule.step_scale,
            task_options=dict(job.task_options),
        )
        return final.run_plan(plan, ctx)

    def summary(self, document: dict[str, Any]) -> Summary:
        rows = [(k, f"{v:.6g}", document["transforms"][k]) for k, v in document["hyperparameters"].items()]
        title = f"tuned {document['optimizer']} on {document['task']}"
        return Summary(title, ("hyperparameter", "tuned", "transform"), rows)

    def results_summary(self, results: dict[str, Any]) -> list[Summary]:
        return final.results_tables(results)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary_line,
            "optimizers": [name for name, spec in lodo.OPTIMIZERS.items() if spec.names],
            "settings": {
                "schedule": " | ".join(schedules.SOURCES),
                "normalization": " | ".join(schedules.NORMALIZATIONS),
                "decay_transform": " | ".join(schedules.DECAY_TRANSFORMS),
                "generations": "from the task's schedule",
                "population": "from the task's schedule",
            },
            "options": GaOptions.model_json_schema(),
            "unit": "steps count loss evaluations; schedules per task (`schedules/data/schedules.json`)",
        }


STRATEGY = GeneticAlgorithm()
