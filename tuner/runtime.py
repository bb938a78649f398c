"""Where a job runs (``Runtime``) and what a strategy is handed to run it (``JobContext``).

The runtime names the executor kind and the Ray to use; nothing in it changes a job's result.
The executor is made on first use and closed when the job ends, so a strategy that never maps
trials (one-pass) never starts a Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .events import EventSink, ignore
from .executors import Executor, make_executor
from .rundir import RunDir

ExecutorKind = Literal["ray", "local"]


@dataclass(frozen=True)
class Runtime:
    """``executor``: ``ray`` (a local Ray, or ``ray_address``'s cluster) or ``local`` (in this
    process). A local Ray keeps its files in ``ray_temp_dir`` (default: the run directory's ``ray``)."""

    executor: ExecutorKind = "ray"
    ray_address: str | None = None
    ray_temp_dir: Path | None = None


@dataclass
class JobContext:
    """One job's run directory, runtime, event sink and restart state, handed to its strategy.

    ``resume``: continue what the run directory (or ``history``) holds instead of refusing it.
    ``history``: the finished generation records as the job store holds them (the source of truth
    in the service); None where the run directory is the only record (the command line).
    """

    run_dir: RunDir
    runtime: Runtime = field(default_factory=Runtime)
    emit: EventSink = ignore
    resume: bool = False
    history: Sequence[dict[str, Any]] | None = None
    num_cpus_per_trial: float = 1.0
    num_gpus_per_trial: float = 0.0
    evaluation_dir: Path | None = None  # default: the run directory's evaluation/
    # how the executor runs a shard of trials (tuner.population): set from the job by tuner.jobs
    vectorize: str = "off"
    members_per_task: int | None = None
    executor_override: Executor | None = None  # an executor the caller owns (tests, benchmarks)
    _executor: Executor | None = field(default=None, repr=False)

    @property
    def evaluation_path(self) -> Path:
        return self.evaluation_dir or self.run_dir.evaluation_dir

    def executor(self) -> Executor:
        """The job's executor, made on first use (a Ray executor starts or joins Ray here)."""
        if self.executor_override is not None:
            return self.executor_override
        if self._executor is None:
            options: dict[str, Any] = {"vectorize": self.vectorize, "members_per_task": self.members_per_task}
            if self.runtime.executor == "ray":
                options |= {
                    "address": self.runtime.ray_address,
                    "num_cpus_per_trial": self.num_cpus_per_trial,
                    "num_gpus_per_trial": self.num_gpus_per_trial,
                }
                if not self.runtime.ray_address:
                    options["temp_dir"] = str(
                        self.runtime.ray_temp_dir or self.run_dir.root.resolve() / "ray"
                    )
            self._executor = make_executor(self.runtime.executor, **options)
        return self._executor

    def close(self) -> None:
        """Close the executor this context made (never ``executor_override``)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None
