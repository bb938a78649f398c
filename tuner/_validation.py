"""The tuner's error messages: "Invalid <name>: <value> (allowed: <what>)"."""

from __future__ import annotations


def invalid(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"Invalid {name}: {value!r} (allowed: {allowed})")


def check_int_at_least(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(name, value, f"an integer >= {low}")
