"""Request and response bodies. Requests are validated against the registries here, so a bad
name or bound is a 422 naming the field before any job row exists."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

import lodo
import schedules
import tasks as task_registry

JobKind = Literal["tune", "evaluate"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL = ("succeeded", "failed", "cancelled")

OptionValue = bool | int | float | str
StrategyOption = OptionValue | list[str] | dict[str, float] | None
Device = Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")]


def _allowed(names) -> str:
    return " | ".join(names)


def _check_task(name: str) -> str:
    if name not in task_registry.TASK_NAMES:
        raise ValueError(f"unknown task {name!r} (allowed: {_allowed(task_registry.TASK_NAMES)})")
    return name


def _check_optimizer(name: str) -> str:
    if name not in lodo.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} (allowed: {_allowed(lodo.OPTIMIZERS)})")
    return name


TaskName = Annotated[str, AfterValidator(_check_task)]
OptimizerName = Annotated[str, AfterValidator(_check_optimizer)]


def _check_task_options(task: str, options: dict[str, OptionValue]) -> None:
    task_registry.registry.spec(task).resolve_options(options)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self, kind: str) -> str:
        """SHA-256 of the canonical body: what an Idempotency-Key is bound to."""
        body = json.dumps({"kind": kind, **self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


class TuneRequest(_Request):
    """A tuning job: the LODO paper's GA by default (10 × 32 on the paper schedules)."""

    task: TaskName = Field(description="Task name (GET /tasks).", examples=["rosenbrock"])
    optimizer: OptimizerName | None = Field(
        None,
        description="Optimizer to tune (GET /optimizers); none with strategy onepass (it tunes SGD).",
        examples=["lodo"],
    )
    strategy: Literal["ga", "asha", "onepass"] = "ga"
    strategy_options: dict[str, StrategyOption] = Field(
        default_factory=dict,
        description="Settings of asha (num_samples, max_t, grace_period, reduction_factor, report_every, "
        "metric, tune_batch_size, time_budget_s) or onepass (steps, update_interval, lookback, meta_lr, "
        "per_parameter_lr, tuned, initial); GET /strategies.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Job seed: every trial seed derives from it.")
    schedule: Literal["code", "paper"] = "code"
    generations: int | None = Field(None, ge=1, le=1000)
    population: int | None = Field(None, ge=2, le=4096)
    step_scale: float = Field(1.0, gt=0, le=100)
    normalization: Literal["code", "paper"] = "code"
    decay_transform: Literal["log1m", "logit"] = "log1m"
    task_options: dict[str, OptionValue] = Field(default_factory=dict)
    device: Device = "cpu"
    num_cpus_per_trial: float = Field(1.0, ge=0, le=256)
    num_gpus_per_trial: float = Field(0.0, ge=0, le=16)
    baselines: list[OptimizerName] = Field(default_factory=list, max_length=len(lodo.OPTIMIZERS))
    seeds: int = Field(8, ge=1, le=256, description="Final evaluation runs per optimizer.")
    evaluate: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TuneRequest:
        _check_task_options(self.task, self.task_options)
        if self.strategy == "onepass":
            if self.optimizer is not None or self.baselines:
                raise ValueError("strategy onepass tunes SGD itself: give no optimizer and no baselines")
        elif self.optimizer is None:
            raise ValueError(
                f"strategy {self.strategy} needs an optimizer (allowed: {_allowed(lodo.OPTIMIZERS)})"
            )
        elif not lodo.get(self.optimizer).names:
            raise ValueError(f"optimizer {self.optimizer!r} has no hyperparameters to tune")
        if self.strategy == "ga":
            if self.strategy_options:
                raise ValueError("strategy_options is for asha and onepass; the GA takes schedule fields")
            if self.schedule == "paper":
                schedules.schedule_for(self.task, "paper")  # ValueError when the paper did not tune it
        else:
            strategy_config(self)  # the strategy's own checks, named by field
        return self


def final_length(task: str, step_scale: float) -> int:
    """The task's final-evaluation length (its GA schedule's M), scaled."""
    return max(2, round(schedules.schedule_for(task).final_steps * step_scale))


def strategy_config(request: TuneRequest):
    """The AshaConfig or OnePassConfig of an asha / onepass request (ValueError when invalid)."""
    from tuner.asha import AshaConfig
    from tuner.onepass import OnePassConfig

    options = dict(request.strategy_options)
    common = {
        "task": request.task,
        "seed": request.seed,
        "task_options": dict(request.task_options),
        "device": request.device,
    }
    length = final_length(request.task, request.step_scale)
    if request.strategy == "asha":
        factory, defaults = (
            AshaConfig,
            {
                "optimizer": request.optimizer,
                "max_t": length,
                "num_cpus_per_trial": request.num_cpus_per_trial,
                "num_gpus_per_trial": request.num_gpus_per_trial,
            },
        )
    else:
        factory, defaults = OnePassConfig, {"steps": length}
    allowed = [
        f.name for f in dataclasses.fields(factory) if f.name not in {*common, *defaults} - {"max_t", "steps"}
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown strategy_options {unknown} for {request.strategy} (allowed: {_allowed(allowed)})"
        )
    try:
        return factory(**{**defaults, **common, **options})
    except TypeError as err:
        raise ValueError(f"invalid strategy_options for {request.strategy}: {err}") from None


class EvaluateRequest(_Request):
    """N seeds of each optimizer at the task's final length, with given, tuned or paper values."""

    task: TaskName = Field(examples=["rosenbrock"])
    optimizers: list[OptimizerName] = Field(
        min_length=1, max_length=len(lodo.OPTIMIZERS), examples=[["adam", "lodo"]]
    )
    hyperparameters: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Values per optimizer; others use `tuned`."
    )
    from_job: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Use the tuned values of this finished tune job."
    )
    tuned: Literal["paper", "defaults"] = "paper"
    seeds: int = Field(8, ge=1, le=256)
    steps: int | None = Field(None, ge=2, le=10_000_000, description="Default: the task's final length.")
    step_scale: float = Field(1.0, gt=0, le=100)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    task_options: dict[str, OptionValue] = Field(default_factory=dict)
    device: Device = "cpu"

    @field_validator("optimizers")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("optimizers must be distinct")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateRequest:
        _check_task_options(self.task, self.task_options)
        for name, values in self.hyperparameters.items():
            if name not in self.optimizers:
                raise ValueError(f"hyperparameters given for {name!r}, which is not in optimizers")
            wanted = lodo.get(name).names
            unknown = sorted(set(values) - set(wanted))
            if unknown:
                raise ValueError(
                    f"unknown hyperparameters {unknown} for {name} (allowed: {_allowed(wanted)})"
                )
        if self.tuned == "paper" and self.from_job is None:
            for name in self.optimizers:
                if name not in self.hyperparameters:
                    try:
                        schedules.paper_values(self.task, name)
                    except ValueError as err:
                        raise ValueError(f"{err}; give hyperparameters or tuned='defaults'") from None
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
