"""The tuning driver: runs the GA generation by generation, checkpointing each one.

``tune(config, run_dir, executor)`` asks the GA for a population, runs it through the executor,
tells the GA the fitnesses and writes the generation's file before asking for the next. A run
resumed from its directory continues after the last finished generation and, because every
seed derives from (job seed, generation, individual) and the GA state is stored exactly, ends
with exactly the result an uninterrupted run would have produced.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import lodo
import tasks as task_registry

from . import ga
from .rundir import RunDir, read_json, write_json
from .trial import TrialResult, TrialSpec

CONFIG_VERSION = 1


@dataclass(frozen=True)
class TuneConfig:
    """Everything that defines a tuning job's outcome (and nothing about where it runs)."""

    task: str
    optimizer: str
    schedule: Any  # schedules.Schedule
    space: Any  # schedules.SearchSpace
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "task": self.task,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "task_options": dict(self.task_options),
            "device": self.device,
            "schedule": self.schedule.model_dump(mode="json"),
            "space": self.space.model_dump(mode="json"),
        }


def _versions() -> dict[str, str]:
    names = ("lodotune", "torch", "numpy", "ray")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# progress(event, payload): "generation" {generation, of, sigma, steps, population} at the start
# of a generation, "trial" {generation, index, result} per finished trial, "told" {generation,
# best_fitness, elite, all_diverged, mean} after each generation's checkpoint is written.
Progress = Callable[[str, dict[str, Any]], None]


# logit cannot encode a decay of exactly 0 or 1 (momentum defaults to 0): start just inside.
LOGIT_MARGIN = 1e-3


def starting_values(space, defaults: dict[str, float]) -> dict[str, float]:
    """Generation 0's centre: the defaults, moved inside (0, 1) where the transform is logit."""
    return {
        name: min(max(value, LOGIT_MARGIN), 1 - LOGIT_MARGIN) if space.transforms[name] == "logit" else value
        for name, value in defaults.items()
    }


def _check_resume(run_dir: RunDir, config: TuneConfig) -> None:
    saved = read_json(run_dir.config_path)
    wanted = json.loads(json.dumps(config.to_dict()))  # compare as stored: tuples become lists
    differing = [k for k in wanted if saved.get(k) != wanted[k]]
    if differing:
        details = ", ".join(f"{k}: saved {saved.get(k)!r}, asked {wanted[k]!r}" for k in differing[:3])
        raise ValueError(
            f"Cannot resume {run_dir.root}: it was started with different {differing} ({details})"
        )


def tune(
    config: TuneConfig, run_dir: RunDir, executor, *, resume: bool = False, progress: Progress | None = None
):
    """Run (or continue) the GA; returns the hyperparameters document, also written to the run dir."""
    emit = progress or (lambda event, payload: None)
    if resume:
        if not run_dir.config_path.exists():
            raise ValueError(f"Cannot resume {run_dir.root}: no config.json there")
        _check_resume(run_dir, config)
    elif run_dir.config_path.exists():
        raise ValueError(f"{run_dir.root} already holds a run: pass resume to continue it, or another --out")
    else:
        write_json(run_dir.config_path, config.to_dict())

    schedule, space = config.schedule, config.space
    finished = run_dir.finished_generations()
    if finished:
        state = ga.GAState.from_dict(finished[-1]["state"])
    else:
        state = ga.init(space, starting_values(space, lodo.get(config.optimizer).defaults), config.seed)
    total = len(schedule.generations)
    while state.generation < total:
        g = state.generation
        gen = schedule.generations[g]
        emit(
            "generation",
            {
                "generation": g,
                "of": total,
                "sigma": gen.sigma,
                "steps": gen.steps,
                "population": schedule.population,
            },
        )
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
            )
            for ind in population
        ]

        def on_trial(index: int, result: TrialResult, g=g) -> None:
            emit("trial", {"generation": g, "index": index, "result": result})

        results = executor.map(specs, on_trial)
        told = ga.tell(state, space, population, [ga.fitness(r.losses, gen.steps) for r in results])
        write_json(run_dir.generation_path(g), _generation_record(g, gen, population, results, told, space))
        state = told.state
        finite = [f for f in told.fitnesses if math.isfinite(f)]
        emit(
            "told",
            {
                "generation": g,
                "best_fitness": min(finite) if finite else math.inf,
                "elite": told.elite,
                "all_diverged": told.all_diverged,
                "mean": space.decode(state.mean),
            },
        )

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
        "versions": _versions(),
    }
    write_json(run_dir.hyperparameters_path, document)
    return document


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
                "fitness": fit if math.isfinite(fit) else None,  # None: diverged (+inf)
                "diverged": res.diverged,
                "error": res.error,
                "wall_time": res.wall_time,
            }
            for ind, res, fit in zip(population, results, told.fitnesses, strict=True)
        ],
        "elite": told.elite,
        "all_diverged": told.all_diverged,
        "elite_mean": {"coords": dict(told.state.mean), "values": space.decode(told.state.mean)},
        "state": told.state.to_dict(),
    }
