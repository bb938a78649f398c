"""ASHA search spaces per optimizer (clarke.md §2.2; series SFN §4.6), loaded from
``data/asha_spaces.json``.

Each space gives, for some of an optimizer's hyperparameters, the distribution random search
draws it from: ``loguniform`` on [low, high], ``one_minus_loguniform`` (the value is 1 − x with
x log-uniform on [low, high]: how the authors sample momentum-like quantities), or ``int_uniform``
(an integer drawn uniformly from low, low + 1, …, high, both inclusive: series SFN's K and a;
Ray Tune's ``randint(low, high + 1)``). Hyperparameters a space leaves out keep the registry's
defaults. Tasks with a ``batch_size`` option also draw the batch size from :func:`batch_sizes`,
as the paper does for every batch-based task.

The file may name optimizers that are not registered (yet): :func:`asha_optimizers` lists only the
registered ones, and :func:`asha_space` checks a space against the registry when it is asked for.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import lodo

from ._errors import invalid, validated

_LOG = ("loguniform", "one_minus_loguniform")


class Distribution(BaseModel):
    """Where one hyperparameter is drawn from.

    ``loguniform`` / ``one_minus_loguniform``: ``low`` < ``high``, both finite numbers > 0 (floats).
    ``int_uniform``: ``low`` <= ``high``, both integers >= 0 (JSON integers, not 3.0), both
    inclusive.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    distribution: Literal["loguniform", "one_minus_loguniform", "int_uniform"]
    # int_uniform keeps its integers; a log range's bounds become floats (see the validators)
    low: int | float
    high: int | float

    @model_validator(mode="before")
    @classmethod
    def _bounds_as_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("distribution")
        for name in ("low", "high"):
            if name not in data:
                continue
            value = data[name]
            if kind == "int_uniform":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise invalid(f"{name} of int_uniform", repr(value), "an integer >= 0")
            elif kind in _LOG:
                if isinstance(value, bool):  # pydantic would read True as 1.0
                    raise invalid(f"{name} of {kind}", repr(value), "a finite number > 0")
                if isinstance(value, int):
                    data[name] = float(value)
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if self.distribution == "int_uniform":
            if not self.low <= self.high:
                raise invalid("range", f"[{self.low}, {self.high}]", "low <= high for int_uniform")
            return self
        for name in ("low", "high"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise invalid(f"{name} of {self.distribution}", repr(value), "a finite number > 0")
        if not self.low < self.high:
            raise invalid("range", f"[{self.low}, {self.high}]", "low < high")
        return self

    def contains(self, value: float) -> bool:
        """Whether a draw could be ``value`` (for ``int_uniform``: an integer-valued number in
        [low, high], 3.0 included, as a trial's hyperparameters are floats)."""
        if self.distribution == "int_uniform":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            return math.isfinite(value) and float(value).is_integer() and self.low <= value <= self.high
        x = 1 - value if self.distribution == "one_minus_loguniform" else value
        return self.low <= x <= self.high


class AshaSpace(BaseModel):
    """The ASHA search space of one optimizer: ``params`` maps hyperparameter names to distributions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: str
    paper: str
    params: dict[str, Distribution]

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    notes: dict[str, str]
    batch_sizes: tuple[Annotated[int, Field(ge=1, strict=True)], ...]
    spaces: dict[str, dict[str, Any]]


@cache
def _shipped() -> _File:
    text = resources.files(__package__).joinpath("data/asha_spaces.json").read_text()
    return validated(_File, json.loads(text), "ASHA spaces file")


def batch_sizes() -> tuple[int, ...]:
    """The batch sizes ASHA draws from for tasks with a ``batch_size`` option."""
    return _shipped().batch_sizes


def asha_optimizers() -> tuple[str, ...]:
    """The registered optimizers that have an ASHA search space, in file order."""
    return tuple(name for name in _shipped().spaces if name in lodo.OPTIMIZERS)


def asha_space(optimizer: str) -> AshaSpace:
    """The ASHA search space of a registered optimizer.

    ValueError when the optimizer is not registered, has no ASHA space, or the space names a
    hyperparameter the optimizer does not have (the message lists the allowed ones).
    """
    spec = lodo.get(optimizer)
    entry = _shipped().spaces.get(optimizer)
    if entry is None:
        raise invalid("optimizer for ASHA", repr(optimizer), " | ".join(asha_optimizers()))
    space = validated(AshaSpace, {"optimizer": optimizer, **entry}, f"ASHA space of {optimizer}")
    for name in space.params:
        if name not in spec.names:
            raise invalid(
                f"hyperparameter of {optimizer} in its ASHA space", repr(name), " | ".join(spec.names)
            )
    return space


def source() -> str:
    """Where the shipped spaces come from (recorded next to every ASHA result)."""
    return _shipped().source
