"""Argument checks shared by every optimizer: one message form, naming the argument and the range."""

from __future__ import annotations

import math


def fail(name: str, value: object, allowed: str) -> None:
    """Raise ``ValueError("Invalid <name>: <value> (allowed: <allowed>)")``, the house form."""
    raise ValueError(f"Invalid {name}: {value} (allowed: {allowed})")


def check_nonnegative(name: str, value: float) -> float:
    """A finite number >= 0 (learning rates, damping, epsilons)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        fail(name, repr(value), "a finite number >= 0")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite number > 0."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        fail(name, repr(value), "a finite number > 0")
    return float(value)


def check_decay(name: str, value: float) -> float:
    """A decay rate in [0, 1) (momentum, β, EMA coefficients)."""
    if not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
        fail(name, repr(value), "a number in [0, 1)")
    return float(value)


def check_positive_int(name: str, value: int) -> int:
    """An integer >= 1 (block sizes, depths, history lengths)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(name, repr(value), "an integer >= 1")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """One of a fixed set of strings."""
    if value not in choices:
        fail(name, repr(value), " | ".join(choices))
    return value
