"""What a tuning strategy is: typed options, a tuning loop, its final evaluation, a summary.

The job runner (:mod:`tuner.jobs`) calls, for a tune job: ``check(job)`` when the spec is
validated (a ValueError names the field), then ``tune(job, ctx)`` → the hyperparameters
document, then ``evaluate(job, document, ctx)`` → the results document when the job evaluates.
``summary(document)`` turns a hyperparameters document into rows a front end prints. A strategy
emits its progress through ``ctx.emit`` in the vocabulary of :mod:`tuner.events`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from ..tables import Summary
from ..trial import AllTrialsFailed

__all__ = ["AllTrialsFailed", "OptionValue", "Strategy", "StrategyOptions", "Summary"]

OptionValue = bool | int | float | str  # a task option's value in a request

if TYPE_CHECKING:
    from ..runtime import JobContext
    from ..specs import TuneJob


class StrategyOptions(BaseModel):
    """A strategy's own settings (``strategy_options`` of a request): strict types, no unknown
    keys; ``strategy`` is the tag that tells the strategies' options apart."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields), key=str)
            if unknown:
                allowed = " | ".join(k for k in cls.model_fields if k != "strategy")
                raise ValueError(f"Invalid {cls.name} option {unknown[0]!r} (allowed: {allowed})")
        return data


class Strategy(Protocol):
    name: str
    summary_line: str
    Options: type[StrategyOptions]
    resumable: bool  # False: a restarted job tunes again from the start
    default_seeds: int  # final evaluation runs per optimizer when a job does not say
    tunes_optimizer: bool  # False: the strategy brings its own optimizer (one-pass tunes SGD)

    def check(self, job: TuneJob) -> None:
        """Cross-field checks of a job with this strategy (ValueError, house form)."""
        ...

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]: ...

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]: ...

    def summary(self, document: dict[str, Any]) -> Summary:
        """The hyperparameters document as a table."""
        ...

    def results_summary(self, results: dict[str, Any]) -> list[Summary]:
        """The results document as tables."""
        ...

    def describe(self) -> dict[str, Any]: ...
