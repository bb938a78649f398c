"""``run_trial``: one optimizer on one seeded task for a fixed number of loss evaluations.

Pure (a spec in, a result out) so that every executor and strategy can call it the same way.
Steps are counted in loss evaluations, as in the LODO paper's curves (lodo.md §3.7): L-BFGS
and O-LBFGS spend two per iteration, and so do AdamQLR and series SFN with adaptive damping
(the loss, then the same minibatch again after the step). Curvature products (Hessian-vector
products, Jacobian-vector products of the outputs) are not loss evaluations and are not counted;
their cost shows in the wall time. As for a pair, a same-batch step starts only when both of its
evaluations fit: the last evaluation of an odd budget is a plain loss evaluation, no step.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

import lodo
import tasks
from tasks.base import OutputBatch, OutputTask


@dataclass(frozen=True)
class TrialSpec:
    task: str
    optimizer: str
    hyperparameters: dict[str, float]
    seed: int
    steps: int
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    # constructor choices that are not tuned (LODO's meta_dtype), as the registry names them
    optimizer_options: dict[str, str] = field(default_factory=dict)
    # also sample task.metrics() during training, after every this many loss evaluations (the
    # bowl's Hessian-approximation error over training, lodo.md §3.6); None: at the end only
    metric_every: int | None = None


Status = Literal["ok", "diverged", "error"]


@dataclass
class TrialResult:
    spec: TrialSpec
    losses: list[float]
    diverged: bool
    wall_time: float
    steps_per_second: float
    metrics: dict[str, float]
    error: str | None = None
    # how it ran: {"vectorized": True, "members": P, "formulation": ...} for a member of a
    # population (wall_time is then the population's), {"vectorized": False, "reason": ...} alone
    execution: dict[str, Any] | None = None
    # with spec.metric_every: {"evaluation": k, **task.metrics()} after evaluation k, in order
    metric_trace: list[dict[str, float]] = field(default_factory=list)

    @property
    def status(self) -> Status:
        """What happened: ``"error"`` (the trial raised or its worker was lost: not the
        hyperparameters' fault), ``"diverged"`` (a non-finite loss or gradient) or ``"ok"``.

        Derived from ``error`` and ``diverged``, not stored, so results kept before it existed
        read back with the right status.
        """
        if self.error is not None:
            return "error"
        return "diverged" if self.diverged else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}

    @classmethod
    def finished(
        cls, spec, losses, *, diverged, wall, metrics, execution=None, metric_trace=None
    ) -> TrialResult:
        """The result of a trial that ran (to its end or to its divergence) in ``wall`` seconds."""
        rate = len(losses) / wall if wall > 0 else float("inf")
        return cls(
            spec, losses, diverged, wall, rate, metrics, execution=execution, metric_trace=metric_trace or []
        )


def check_metric_every(metric_every: object) -> int | None:
    ok = metric_every is None or (
        isinstance(metric_every, int) and not isinstance(metric_every, bool) and metric_every >= 1
    )
    if not ok:
        raise ValueError(f"Invalid metric_every: {metric_every!r} (allowed: an integer >= 1, or none)")
    return metric_every  # type: ignore[return-value]


def due(evaluations: int, metric_every: int | None, sampled: int) -> bool:
    """Whether metrics are due after a step that brought the count to ``evaluations``: once per
    multiple of ``metric_every`` reached (a step of two evaluations may jump past one); ``sampled``
    is how many samples were taken."""
    return metric_every is not None and evaluations // metric_every > sampled


class Diverged(Exception):
    """Raised by :func:`train` when a recorded loss is not finite."""


class AllTrialsFailed(RuntimeError):
    """Every trial of a generation (or of a search, or an evaluation) raised: nothing was learnt,
    so the job fails with the first error rather than report its starting values as tuned."""


def build_optimizer(
    task,
    name: str,
    values: dict[str, float],
    *,
    seed: int,
    total_steps: int,
    options: dict[str, str] | None = None,
):
    """The registered optimizer ``name`` on ``task``'s parameters, with the registry's ``options``
    (``{"meta_dtype": "float32"}``); a seeded optimizer (LODO) draws from the trial seed."""
    optimizer_spec = lodo.get(name)
    kwargs = optimizer_spec.check_options(options or {})
    if optimizer_spec.needs_total_steps:
        kwargs["total_steps"] = total_steps
    if optimizer_spec.seeded:
        kwargs["seed"] = seed
    return optimizer_spec.build(task.parameters(), values, **kwargs)


def train(task, optimizer, evaluation: str, budget: int, losses: list[float]) -> Iterator[None]:
    """Step ``optimizer`` on ``task`` until ``losses`` holds ``budget`` loss evaluations, recording
    each one; yields after every step. Raises :class:`Diverged` on a non-finite loss (an
    optimizer's FloatingPointError passes through). ``evaluation`` is the registry's mode."""

    def record(loss: torch.Tensor) -> torch.Tensor:
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value):
            raise Diverged
        return loss

    def same_batch_closure():
        optimizer.zero_grad()
        loss = record(task.same_batch_loss())
        loss.backward()
        return loss

    def one_batch_closure() -> tuple[Callable[[], torch.Tensor], OutputBatch | None]:
        """A closure over one fresh minibatch for one step; each call is one recorded evaluation.

        A task with model outputs hands over the batch itself (re-evaluated exactly, query pixels
        included); any other task evaluates a fresh batch first and its same batch after that.
        """
        if isinstance(task, OutputTask):
            batch = task.next_output_batch()
            evaluations = itertools.repeat(batch.evaluate)
        else:
            batch = None
            evaluations = itertools.chain([task.train_loss], itertools.repeat(task.same_batch_loss))

        def closure() -> torch.Tensor:
            return record(next(evaluations)())

        return closure, batch

    while len(losses) < budget:
        if evaluation == "loss":
            optimizer.step(lambda: record(task.train_loss()))
        elif evaluation in ("same-batch-loss", "same-batch-outputs"):
            if len(losses) + 2 > budget:  # no room for the step's second evaluation
                record(task.train_loss())
                return
            closure, batch = one_batch_closure()
            if evaluation == "same-batch-outputs":
                optimizer.step(closure, batch=batch)
            else:
                optimizer.step(closure)
        else:
            optimizer.zero_grad()
            record(task.train_loss()).backward()
            if evaluation == "gradient":
                optimizer.step()
            elif len(losses) < budget:  # the pair's second evaluation fits the budget
                optimizer.step(same_batch_closure)
            else:
                return
        yield


def run_trial(spec: TrialSpec) -> TrialResult:
    """Train ``spec.optimizer`` on ``spec.task`` for ``spec.steps`` loss evaluations.

    Stops early, marked diverged, on a non-finite loss or when an optimizer refuses a
    non-finite gradient (LODO's FloatingPointError). Any other exception (missing data, an
    unknown hyperparameter, OOM) propagates: executors turn it into a result with status
    ``"error"``, not ``"diverged"``. The optimizer's seed is the trial seed.
    """
    if spec.steps < 1:
        raise ValueError(f"Invalid steps: {spec.steps} (allowed: an integer >= 1)")
    check_metric_every(spec.metric_every)
    optimizer_spec = lodo.get(spec.optimizer)
    task = tasks.build(spec.task, seed=spec.seed, device=spec.device, **spec.task_options)
    optimizer = build_optimizer(
        task,
        spec.optimizer,
        spec.hyperparameters,
        seed=spec.seed,
        total_steps=spec.steps,
        options=spec.optimizer_options,
    )
    losses: list[float] = []
    trace: list[dict[str, float]] = []
    precondition = getattr(optimizer, "precondition", None)
    diverged = False
    start = time.perf_counter()
    try:
        for _ in train(task, optimizer, optimizer_spec.evaluation, spec.steps, losses):
            if due(len(losses), spec.metric_every, len(trace)):
                trace.append({"evaluation": len(losses), **task.metrics(preconditioner=precondition)})
    except (Diverged, FloatingPointError):
        diverged = True
    wall = time.perf_counter() - start
    metrics = {} if diverged else task.metrics(preconditioner=precondition)
    return TrialResult.finished(
        spec, losses, diverged=diverged, wall=wall, metrics=metrics, metric_trace=trace
    )
