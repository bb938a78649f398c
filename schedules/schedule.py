"""GA schedules (lodo.md §3.3, §3.5, §3.6): per generation the noise σ_g and the steps T_g each
trial trains for, the population, the final-evaluation length, and the halving rule.

Shipped schedules live in ``data/schedules.json`` under three sources:

* ``code`` — the authors' ``experiment2.py`` (§3.3), the default, as the code is authoritative;
* ``paper`` — the paper's Table 5, which differs for the noisy quadratic bowl (the paper prints
  the image-generation steps) and for ResNet-18 generation 5 (50 steps, code 60);
* ``lodotune`` — our own for the tasks the paper did not tune on (Rosenbrock's σ sequence, modest
  CPU step counts). ``schedule_for(task, "code")`` falls back to it and records
  ``source="lodotune"``, so every output says which schedule actually ran.

Custom schedules are JSON files in ``Schedule.model_dump()`` form, read by :func:`load_schedule`.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import lodo

from ._errors import invalid, read_json, validated

Source = Literal["code", "paper"]
SOURCES: tuple[str, ...] = ("code", "paper")
_FALLBACK = "lodotune"

_PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Generation(BaseModel):
    """One GA generation (§3.2): every trial adds N(0, σ²) to each normalized coordinate of the
    mean and trains for ``steps`` steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sigma: _PositiveFloat
    steps: Annotated[int, Field(ge=1, strict=True)]


class Schedule(BaseModel):
    """A task's tuning schedule and final-evaluation length.

    ``final_steps`` is the milestone M of the final runs (§3.6: bowl 100 000, Rosenbrock 200,
    image generation 300 000, ResNet-18 3 000). ``halve_first`` applies the §3.5 halving of the
    learning rate before those runs (see :func:`apply_halving`; the name is the authors', whose
    code halves the first hyperparameter). ``step_scale`` records by how much :meth:`scaled`
    shrank or grew the step counts (1.0 = as published).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    source: str
    population: Annotated[int, Field(ge=2, strict=True)]
    generations: tuple[Generation, ...]
    final_steps: Annotated[int, Field(ge=1, strict=True)]
    halve_first: Annotated[bool, Field(strict=True)]
    step_scale: _PositiveFloat = 1.0

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        _check_task(task)
        return task

    @field_validator("generations")
    @classmethod
    def _at_least_one(cls, generations: tuple[Generation, ...]) -> tuple[Generation, ...]:
        if not generations:
            raise invalid("generations", "none", "at least one generation")
        return generations

    def scaled(self, step_scale: float) -> Schedule:
        """Every generation's steps and ``final_steps`` multiplied by ``step_scale``, rounded
        (``round``), and at least 2; ``step_scale`` multiplies the recorded one. For quick runs;
        σ and the population are unchanged."""
        if (
            isinstance(step_scale, bool)
            or not isinstance(step_scale, (int, float))
            or not (math.isfinite(step_scale) and step_scale > 0)
        ):
            raise invalid("step_scale", repr(step_scale), "a finite number > 0")

        def scale(steps: int) -> int:
            return max(2, round(steps * step_scale))

        return self.model_copy(
            update={
                "generations": tuple(
                    Generation(sigma=g.sigma, steps=scale(g.steps)) for g in self.generations
                ),
                "final_steps": scale(self.final_steps),
                "step_scale": self.step_scale * step_scale,
            }
        )

    def with_overrides(self, generations: int | None = None, population: int | None = None) -> Schedule:
        """This schedule with ``generations`` generations — the first ones when fewer, the last
        one repeated (same σ and steps) when more — and/or another ``population``. ``None`` keeps
        the schedule's own."""
        update: dict[str, Any] = {}
        if generations is not None:
            if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
                raise invalid("generations", repr(generations), "an integer >= 1")
            extra = max(0, generations - len(self.generations))
            update["generations"] = self.generations[:generations] + (self.generations[-1],) * extra
        if population is not None:
            if isinstance(population, bool) or not isinstance(population, int) or population < 2:
                raise invalid("population", repr(population), "an integer >= 2")
            update["population"] = population
        return self.model_copy(update=update)


def _check_task(task: str) -> None:
    import tasks  # deferred: the task package is only needed to name the tasks

    if task not in tasks.TASK_NAMES:
        raise invalid("task", repr(task), " | ".join(tasks.TASK_NAMES))


@cache
def _shipped() -> dict[str, dict[str, dict]]:
    text = resources.files(__package__).joinpath("data/schedules.json").read_text()
    return json.loads(text)["schedules"]


def _build(task: str, source: str) -> Schedule:
    return Schedule.model_validate({"task": task, "source": source, **_shipped()[task][source]})


def schedule_for(task: str, source: Source = "code") -> Schedule:
    """The shipped schedule of ``task``: the authors' ``code`` schedule (default) or the
    ``paper``'s Table 5. For a task the paper did not tune on, ``code`` gives lodotune's own
    schedule with ``source="lodotune"`` and ``paper`` is a ValueError. Unknown task or source →
    ValueError listing the allowed ones."""
    if source not in SOURCES:
        raise invalid("schedule source", repr(source), " | ".join(SOURCES))
    _check_task(task)
    entries = _shipped().get(task, {})
    if source in entries:
        return _build(task, source)
    if source == "code" and _FALLBACK in entries:
        return _build(task, _FALLBACK)
    with_source = [t for t, e in _shipped().items() if source in e]
    raise invalid(f"{source} schedule for task", repr(task), " | ".join(with_source))


def load_schedule(path: str | Path) -> Schedule:
    """A custom schedule from a JSON file in ``Schedule.model_dump()`` form (``source`` defaults
    to ``custom``, ``step_scale`` to 1.0). Checked completely before anything runs: an unknown
    key, a missing one, σ ≤ 0, steps < 1, population < 2, no generations or an unknown task is a
    ValueError naming the field, the constraint and the value."""
    data = read_json(path, "schedule")
    if isinstance(data, dict):
        data = {"source": "custom", **data}
    return validated(Schedule, data, f"schedule file {str(path)!r}")


def describe_schedules() -> list[dict[str, Any]]:
    """Every shipped schedule as JSON-ready data (``Schedule.model_dump(mode="json")``, so each
    entry validates back into a Schedule), task by task in file order, each task's default (what
    ``schedule_for(task)`` returns) first."""
    return [
        _build(task, source).model_dump(mode="json")
        for task, entries in _shipped().items()
        for source in entries
    ]


def halved_names(schedule: Schedule, optimizer_name: str) -> tuple[str, ...]:
    """The hyperparameters :func:`apply_halving` divides by 2 for ``optimizer_name``: its learning
    rate (the registry's rate role, ``lodo.get(optimizer_name).learning_rate``) when
    ``schedule.halve_first``; none otherwise, and none for an optimizer without a learning rate
    (Levenberg–Marquardt, Newton, AdamQLR, series SFN). An unknown optimizer is a ValueError."""
    rate = lodo.get(optimizer_name).learning_rate
    return (rate,) if schedule.halve_first and rate is not None else ()


def apply_halving(schedule: Schedule, optimizer_name: str, values: dict[str, float]) -> dict[str, float]:
    """The hyperparameters for the final runs (§3.5): when ``schedule.halve_first`` (in the
    shipped schedules only image generation, ``mnist-autoregression``, as in the paper), the
    optimizer's learning rate is divided by 2 — lr for every optimizer the paper ran, which is α
    for the LODO variants (the names :func:`halved_names` gives); η_meta, decays and every other
    value are unchanged. Always a new dict; ``values`` is not modified. A learning rate to halve
    that is missing from ``values`` is a ValueError.

    The authors' code halves the *first* hyperparameter, which is the learning rate for every
    optimizer it ran; the rule goes by role so that an optimizer whose first hyperparameter is a
    damping (AdamQLR's and series SFN's λ₀, Levenberg–Marquardt's λ) is left as tuned.

    Apply it to tuned values and to Table 6 values alike (Table 6 is pre-halving, §3.8). The
    authors' final LODO-No-Momentum run used its α unhalved (a hard-coded value, §5.1); this rule
    does not copy that exception.
    """
    out = dict(values)
    for name in halved_names(schedule, optimizer_name):
        if name not in out:
            allowed = " | ".join(lodo.get(optimizer_name).names)
            raise invalid(f"hyperparameters for {optimizer_name}", f"no {name!r} to halve", allowed)
        out[name] = out[name] / 2
    return out
