"""``run_population``: the trials of a shard that share task, optimizer and length, as one program.

A GA generation's P individuals (and an evaluation's N seeds of one optimizer) train the same
task with the same optimizer for the same number of steps; only hyperparameters and seeds differ.
Run one by one, each pays ~150 small torch calls per LODO step, so a generation's cost is Python.
Here the P members' parameters are one ``[P, n]`` tensor, their losses one call of the task's
population form (:mod:`tasks.population`) and their update one step of the optimizer's
(:mod:`lodo.population`): per step the work of one trial's calls, P times the arithmetic.

Each member is still its own trial: its task instance draws its own minibatches and noise, its
optimizer its own permutations, from the trial seed; its losses, divergence and metrics are what
``run_trial`` reports for its spec, up to rounding (tests/tuner/test_population.py). A member
whose loss is not finite (or whose gradient LODO refuses) stops at that evaluation, marked
diverged, and is dropped from the batch (``keep``), so nothing non-finite reaches the others.

:func:`plan` decides, for an executor's shard, what runs vectorized: ``vectorize`` is ``auto``
(every supported group), ``on`` (refuse an unsupported pair; :func:`check_supported`) or
``off``; a group larger than ``members_per_task`` or than the memory budget allows is split.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

import lodo
import lodo.population as optimizer_populations
import tasks
import tasks.population as task_populations

from .trial import TrialResult, TrialSpec, check_metric_every, due

Vectorize = Literal["auto", "on", "off"]
VECTORIZE: tuple[str, ...] = ("auto", "on", "off")
# Bytes a vectorized shard may hold, by device type, unless LODOTUNE_POPULATION_MEMORY_MB says.
_DEFAULT_BUDGET_FRACTION = 0.5


def unsupported_reason(task: str, optimizer: str) -> str | None:
    """Why (``task``, ``optimizer``) has no population form, or None when it has one."""
    problems = []
    if not task_populations.supports(task):
        problems.append(f"task {task!r} (vectorized tasks: {' | '.join(task_populations.SUPPORTED)})")
    if not optimizer_populations.supports(optimizer):
        problems.append(
            f"optimizer {optimizer!r} (vectorized optimizers: {' | '.join(optimizer_populations.SUPPORTED)})"
        )
    return " and ".join(problems) or None


def check_vectorize(vectorize: object) -> Vectorize:
    if vectorize not in VECTORIZE:
        raise ValueError(f"Invalid vectorize: {vectorize!r} (allowed: {' | '.join(VECTORIZE)})")
    return vectorize  # type: ignore[return-value]


def check_supported(task: str, optimizers: Sequence[str]) -> None:
    """``vectorize on``: every pair the job runs must have a population form (else a ValueError)."""
    for name in optimizers:
        reason = unsupported_reason(task, name)
        if reason is not None:
            raise ValueError(
                f"Invalid vectorize: 'on' cannot vectorize ({task}, {name}): no population form for {reason}"
            )


def _group_key(spec: TrialSpec) -> str:
    """What the members of one population must share."""
    shared = {
        "task": spec.task,
        "task_options": spec.task_options,
        "optimizer": spec.optimizer,
        "steps": spec.steps,
        "device": spec.device,
        "optimizer_options": spec.optimizer_options,
        "metric_every": spec.metric_every,
    }
    return json.dumps(shared, sort_keys=True, default=str)


@dataclass(frozen=True)
class Shard:
    """Positions of specs that run together; ``vectorized`` or one after another (``reason`` why)."""

    indices: tuple[int, ...]
    vectorized: bool
    reason: str | None = None


def memory_budget(device: str) -> int:
    """Bytes a vectorized shard may use: ``LODOTUNE_POPULATION_MEMORY_MB`` if set, else half of the
    device's free memory (a CUDA device's, or the machine's available RAM)."""
    configured = os.environ.get("LODOTUNE_POPULATION_MEMORY_MB")
    if configured:
        try:
            megabytes = float(configured)
        except ValueError:
            megabytes = -1.0
        if not megabytes > 0:
            raise ValueError(
                f"Invalid LODOTUNE_POPULATION_MEMORY_MB: {configured!r} (allowed: a number of megabytes > 0)"
            )
        return int(megabytes * 2**20)
    resolved = torch.device(device)
    if resolved.type == "cuda":
        free, _ = torch.cuda.mem_get_info(resolved)
        return int(free * _DEFAULT_BUDGET_FRACTION)
    return int(_available_ram() * _DEFAULT_BUDGET_FRACTION)


def _available_ram() -> int:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


_MEMBER_BYTES: dict[str, int] = {}


def member_bytes(spec: TrialSpec) -> int:
    """An estimate of one member's memory in a population: parameters, gradient and optimizer
    state (measured by building the population optimizer for this member alone), ×2 for the
    step's temporaries, plus the activations one training minibatch keeps for the backward pass
    (:func:`tasks.population.activation_bytes`). Cached per group (not per values)."""
    key = _group_key(spec)
    if key not in _MEMBER_BYTES:
        task = tasks.build(spec.task, seed=spec.seed, device="cpu", **spec.task_options)
        params = task_populations.population(spec.task, [task]).initial_parameters()
        optimizer = optimizer_populations.build(
            spec.optimizer, params, [spec.hyperparameters], seeds=[spec.seed], options=spec.optimizer_options
        )
        state = sum(t.numel() * t.element_size() for t in optimizer.state.values())
        activations = task_populations.activation_bytes(task)
        _MEMBER_BYTES[key] = 2 * (state + 3 * params.numel() * params.element_size()) + activations
    return _MEMBER_BYTES[key]


def check_members_per_task(members_per_task: object) -> int | None:
    ok = members_per_task is None or (
        isinstance(members_per_task, int) and not isinstance(members_per_task, bool) and members_per_task >= 1
    )
    if not ok:
        raise ValueError(
            f"Invalid members_per_task: {members_per_task!r} (allowed: an integer >= 1, or none)"
        )
    return members_per_task  # type: ignore[return-value]


def plan(
    specs: Sequence[TrialSpec],
    vectorize: Vectorize,
    *,
    members_per_task: int | None = None,
    slots: int = 1,
    fit_memory: bool = True,
    budget: int | None = None,
) -> list[Shard]:
    """How ``specs`` run: groups of specs that can share a program, in order of first appearance,
    split into shards of at most ``members_per_task`` members (default: the group divided over
    ``slots``, the devices or workers that may run shards at once) and, with ``fit_memory``, of
    what fits ``budget`` bytes (default :func:`memory_budget`); everything else one at a time."""
    check_vectorize(vectorize)
    check_members_per_task(members_per_task)
    if vectorize == "off":
        return [Shard((i,), False, "vectorize off") for i in range(len(specs))]
    groups: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        groups.setdefault(_group_key(spec), []).append(index)
    shards: list[Shard] = []
    for indices in groups.values():
        first = specs[indices[0]]
        reason = unsupported_reason(first.task, first.optimizer)
        if reason is not None:
            if vectorize == "on":
                check_supported(first.task, [first.optimizer])
            shards.extend(Shard((i,), False, f"no population form for {reason}") for i in indices)
            continue
        size = min(len(indices), members_per_task or math.ceil(len(indices) / max(1, slots)))
        if fit_memory:
            available = budget if budget is not None else memory_budget(first.device)
            # a task that cannot be built raises again in the population, as its members' error
            with contextlib.suppress(Exception):
                size = max(1, min(size, available // member_bytes(first)))
        # equal shards rather than a full ones and a remainder: the same wall time each
        count = math.ceil(len(indices) / size)
        size = math.ceil(len(indices) / count)
        shards.extend(Shard(tuple(indices[k : k + size]), True) for k in range(0, len(indices), size))
    return shards


def run_population(
    specs: Sequence[TrialSpec], formulation: task_populations.Formulation = "auto"
) -> list[TrialResult]:
    """Train every spec (all sharing task, options, optimizer, steps and device) as one population;
    returns the ``TrialResult`` of each, in order, as ``run_trial`` would have. Any exception
    (a bad value, missing data, OOM) propagates: the executor makes it every member's error."""
    specs = list(specs)
    if not specs:
        return []
    first = specs[0]
    if len({_group_key(s) for s in specs}) != 1:
        raise ValueError("Invalid population: members differ in task, options, optimizer, steps or device")
    reason = unsupported_reason(first.task, first.optimizer)
    if reason is not None:
        raise ValueError(f"Invalid population: no population form for {reason}")
    if first.steps < 1:
        raise ValueError(f"Invalid steps: {first.steps} (allowed: an integer >= 1)")
    every = check_metric_every(first.metric_every)
    if lodo.get(first.optimizer).evaluation != "gradient":
        raise ValueError(f"Invalid population: {first.optimizer} does not step from one gradient")

    members = [tasks.build(s.task, seed=s.seed, device=s.device, **s.task_options) for s in specs]
    population = task_populations.population(first.task, members, formulation)
    params = population.initial_parameters()
    optimizer = optimizer_populations.build(
        first.optimizer,
        params,
        [s.hyperparameters for s in specs],
        seeds=[s.seed for s in specs],
        options=first.optimizer_options,
    )
    losses: list[list[float]] = [[] for _ in specs]
    traces: list[list[dict[str, float]]] = [[] for _ in specs]
    ended = [0.0] * len(specs)  # when a dropped (diverged) member stopped
    alive = list(range(len(specs)))  # row j of the batch is spec alive[j]
    start = time.perf_counter()

    def drop(stopped: list[int]) -> None:
        nonlocal params, alive
        now = time.perf_counter() - start
        for j in stopped:
            ended[alive[j]] = now
        stopped_rows = set(stopped)
        rows = [j for j in range(len(alive)) if j not in stopped_rows]
        if not rows:  # every member stopped at once: nothing is left to run or to keep
            alive = []
            return
        index = torch.as_tensor(rows, dtype=torch.long, device=params.device)
        params = params.index_select(0, index)
        optimizer.keep(index)
        population.keep(rows)
        alive = [alive[j] for j in rows]

    def sample(evaluations: int) -> None:
        """Every live member's metrics now, as run_trial samples them after this step."""
        population.write_back(params)
        for j, member in enumerate(population.members):
            metrics = member.metrics(preconditioner=optimizer.precondition(j))
            traces[alive[j]].append({"evaluation": evaluations, **metrics})

    for step in range(first.steps):
        if not alive:
            break
        batch_losses, grads = population.losses_and_gradients(params)
        values = batch_losses.tolist()
        for j, value in enumerate(values):
            losses[alive[j]].append(value)
        finite = [j for j, value in enumerate(values) if math.isfinite(value)]
        if len(finite) < len(values):
            stopped = [j for j in range(len(values)) if j not in set(finite)]
            grads = grads[finite]
            drop(stopped)
            if not alive:
                break
        with torch.no_grad():
            refused = optimizer.step(params, grads).tolist()
        if any(refused):
            drop([j for j, r in enumerate(refused) if r])
        if alive and due(step + 1, every, len(traces[alive[0]])):
            sample(step + 1)
    wall = time.perf_counter() - start
    if alive:
        population.write_back(params)
    results: list[TrialResult | None] = [None] * len(specs)
    execution = {"vectorized": True, "members": len(specs), "formulation": population.formulation}
    for j, index in enumerate(alive):  # row j of the batch is member j of the population
        metrics = population.members[j].metrics(preconditioner=optimizer.precondition(j))
        results[index] = TrialResult.finished(
            specs[index],
            losses[index],
            diverged=False,
            wall=wall,
            metrics=metrics,
            execution=dict(execution),
            metric_trace=traces[index],
        )
    for index, spec in enumerate(specs):
        if results[index] is None:
            results[index] = TrialResult.finished(
                spec,
                losses[index],
                diverged=True,
                wall=ended[index],
                metrics={},
                execution=dict(execution),
                metric_trace=traces[index],
            )
    return results  # type: ignore[return-value]


def describe() -> dict[str, Any]:
    """What can run vectorized (``lodotune`` and ``GET /`` list it)."""
    return {"tasks": list(task_populations.SUPPORTED), "optimizers": list(optimizer_populations.SUPPORTED)}
