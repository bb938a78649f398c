"""The typed job specs: ``TuneJob`` and ``EvaluateJob``, what the command line, the service and
the benchmarks all hand to :mod:`tuner.jobs`. Validated against the registries when built, so a
bad name or bound is an error naming the field before anything runs.

``TuneJob.strategy_options`` is the strategies' discriminated union (tag ``strategy``, one member
per registered strategy); the job's ``strategy`` fills the tag when the options leave it out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

import lodo
import tasks as task_registry

from .final import final_length
from .population import Vectorize, check_supported
from .strategies import STRATEGIES, get_strategy
from .strategies.base import OptionValue

MetaDtype = Literal["float32", "float64"]
Device = Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")]
# A JSON number (an integer is one too), never a string, NaN or an infinity.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MAX_STUDIES = 64


def _allowed(names) -> str:
    return " | ".join(names)


def _check_task(name: str) -> str:
    if name not in task_registry.TASK_NAMES:
        raise ValueError(f"Invalid task: {name!r} (allowed: {_allowed(task_registry.TASK_NAMES)})")
    return name


def _check_optimizer(name: str) -> str:
    if name not in lodo.OPTIMIZERS:
        raise ValueError(f"Invalid optimizer: {name!r} (allowed: {_allowed(lodo.OPTIMIZERS)})")
    return name


def _check_strategy(name: str) -> str:
    get_strategy(name)
    return name


TaskName = Annotated[str, AfterValidator(_check_task)]
OptimizerName = Annotated[str, AfterValidator(_check_optimizer)]
StrategyName = Annotated[str, AfterValidator(_check_strategy)]
StrategyOptionsUnion = Annotated[
    Union[tuple(s.Options for s in STRATEGIES.values())],  # noqa: UP007 (a tuple of types)
    Field(discriminator="strategy"),
]


def _check_studies(studies: int) -> int:
    if not 1 <= studies <= MAX_STUDIES:
        raise ValueError(f"Invalid studies: {studies} (allowed: an integer from 1 to {MAX_STUDIES})")
    return studies


def _check_meta_dtype(meta_dtype: str | None, names: list[str]) -> None:
    takers = [name for name in names if "meta_dtype" in lodo.get(name).options]
    if meta_dtype is not None and not takers:
        lodo_family = [n for n, s in lodo.OPTIMIZERS.items() if "meta_dtype" in s.options]
        raise ValueError(
            f"Invalid meta_dtype: {meta_dtype!r} is an option of {_allowed(lodo_family)}, "
            f"and this job runs none of them ({_allowed(names)})"
        )


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: TaskName = Field(description="Task name (GET /tasks).", examples=["rosenbrock"])
    seed: int = Field(
        0, ge=0, le=2**31 - 1, strict=True, description="Job seed: every trial seed derives from it."
    )
    step_scale: float = Field(
        1.0, gt=0, le=100, strict=True, allow_inf_nan=False, description="Multiply every step count by this."
    )
    task_options: dict[str, OptionValue] = Field(default_factory=dict)
    device: Device = "cpu"
    meta_dtype: MetaDtype | None = Field(
        None, description="LODO's meta-state dtype (default float64, the authors'); LODO-family only."
    )
    seeds: int = Field(
        8,
        ge=1,
        le=256,
        strict=True,
        description="Final evaluation runs per optimizer (a tune job's default: its strategy's; asha 50).",
    )
    vectorize: Vectorize = Field(
        "auto",
        description=(
            "Run the trials of a generation (and the seeds of an evaluation) as one batched program: "
            "auto (every supported task and optimizer), on (refuse an unsupported one) or off."
        ),
    )
    members_per_task: int | None = Field(
        None,
        ge=1,
        le=65_536,
        strict=True,
        description="Members per vectorized shard (default: a population divided over its devices).",
    )

    def _check_task_options(self) -> None:
        task_registry.registry.spec(self.task).resolve_options(self.task_options)

    def _check_vectorize(self, optimizers: list[str]) -> None:
        if self.vectorize == "on":
            check_supported(self.task, optimizers)


class TuneJob(_Job):
    """A tuning job: the LODO paper's GA by default, or another registered strategy."""

    optimizer: OptimizerName | None = Field(
        None,
        description="Optimizer to tune (GET /optimizers); none with strategy onepass (it tunes SGD).",
        examples=["lodo"],
    )
    strategy: StrategyName = Field("ga", description=f"One of {_allowed(STRATEGIES)} (GET /strategies).")
    strategy_options: StrategyOptionsUnion = Field(
        None, description="The strategy's settings (GET /strategies); `strategy` is filled in."
    )
    num_cpus_per_trial: float = Field(1.0, ge=0, le=256, strict=True, allow_inf_nan=False)
    num_gpus_per_trial: float = Field(0.0, ge=0, le=16, strict=True, allow_inf_nan=False)
    baselines: list[OptimizerName] = Field(default_factory=list, max_length=len(lodo.OPTIMIZERS))
    evaluate: bool = Field(True, strict=True, description="Run the final evaluation after tuning.")
    studies: Annotated[int, AfterValidator(_check_studies)] = Field(
        1,
        strict=True,
        json_schema_extra={"minimum": 1, "maximum": MAX_STUDIES},
        description=(
            f"Independent GA runs (studies), 1 to {MAX_STUDIES}; strategy ga, evaluate true. Each tunes "
            "from its own seed (study 0: the job seed) and is evaluated over the job's seeds; the job's "
            "hyperparameters and results are the study with the median window loss, and studies.json "
            "holds every study and their spread."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _tag_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            strategy = data.get("strategy", "ga")
            options = data.get("strategy_options")
            options = {} if options is None else options
            if isinstance(options, dict) and isinstance(strategy, str):
                if options.get("strategy", strategy) != strategy:
                    raise ValueError(
                        f"Invalid strategy_options.strategy: {options['strategy']!r} "
                        f"(allowed: the job's strategy, {strategy!r})"
                    )
                data = {**data, "strategy_options": {**options, "strategy": strategy}}
            if "seeds" not in data and isinstance(strategy, str) and strategy in STRATEGIES:
                data = {**data, "seeds": get_strategy(strategy).default_seeds}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TuneJob:
        self._check_task_options()
        strategy = get_strategy(self.strategy)
        if strategy.tunes_optimizer:
            if self.optimizer is None:
                allowed = _allowed(lodo.OPTIMIZERS)
                raise ValueError(f"Invalid optimizer: None (strategy {self.strategy} needs one of {allowed})")
            if not lodo.get(self.optimizer).names:
                raise ValueError(f"Invalid optimizer: {self.optimizer!r} has no hyperparameters to tune")
        elif self.optimizer is not None or self.baselines:
            raise ValueError(
                f"Invalid optimizer: strategy {self.strategy} tunes its own optimizer "
                f"({strategy.describe()['optimizers'][0]}): give no optimizer and no baselines"
            )
        _check_meta_dtype(self.meta_dtype, self.optimizers())
        self._check_vectorize(self.optimizers())
        self._check_studies_fit()
        strategy.check(self)
        return self

    def _check_studies_fit(self) -> None:
        if self.studies == 1:
            return
        # a study resumes from its generation records (tuner.studies), which only the GA keeps
        if self.strategy != "ga":
            raise ValueError(
                f"Invalid studies: {self.studies} with strategy {self.strategy} (allowed: 1; studies "
                "are independent runs of strategy ga)"
            )
        if not self.evaluate:
            raise ValueError(
                f"Invalid studies: {self.studies} with evaluate false (allowed: 1; the median study is "
                "chosen by the evaluated window loss of its tuned set)"
            )

    @property
    def options(self) -> Any:
        """The strategy's typed options."""
        return self.strategy_options

    def optimizers(self) -> list[str]:
        """The tuned optimizer (if the job names one) and the baselines."""
        return [*([self.optimizer] if self.optimizer else []), *self.baselines]


class EvaluateJob(_Job):
    """N seeds of each optimizer at the task's final length, with given, tuned or Table 6 values."""

    optimizers: list[OptimizerName] = Field(
        min_length=1, max_length=len(lodo.OPTIMIZERS), examples=[["adam", "lodo"]]
    )
    hyperparameters: dict[str, dict[str, FiniteFloat]] = Field(
        default_factory=dict, description="Values per optimizer; others use `tuned`."
    )
    tuned: Literal["paper", "defaults"] = Field(
        "paper", description="Values of the optimizers not given: Table 6's (paper) or the defaults."
    )
    steps: int | None = Field(
        None, ge=2, le=10_000_000, strict=True, description="Default: the task's final length."
    )

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateJob:
        self._check_task_options()
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"Invalid optimizers: {self.optimizers} (allowed: distinct names)")
        for name, values in self.hyperparameters.items():
            if name not in self.optimizers:
                raise ValueError(
                    f"Invalid hyperparameters: given for {name!r} (allowed: one of optimizers, "
                    f"{_allowed(self.optimizers)})"
                )
            lodo.get(name).check_values(values)
        _check_meta_dtype(self.meta_dtype, self.optimizers)
        self._check_vectorize(self.optimizers)
        return self

    def length(self) -> int:
        return self.steps if self.steps is not None else final_length(self.task, self.step_scale)
