"""The tuner's error messages: "Invalid <name>: <value> (allowed: <what>)"."""

from __future__ import annotations

from collections.abc import Collection


def invalid(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"Invalid {name}: {value!r} (allowed: {allowed})")


def check_int_at_least(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(name, value, f"an integer >= {low}")


def describe_validation(err, tags: Collection[str] = ()) -> str:
    """A pydantic ``ValidationError`` in the house form, every problem named by its field:
    a validator's own message as it is, a constraint as ``Invalid <field>: <value> (<rule>)``.
    ``tags``: a discriminated union's tags, left out of field paths (``strategy_options.lookback``,
    not ``strategy_options.onepass.lookback``)."""
    problems = []
    for e in err.errors(include_url=False):
        where = ".".join(str(part) for part in e["loc"] if part not in tags)
        if e["type"] == "value_error":
            message = str(e["ctx"]["error"])
            problems.append(message if not where or where in message else f"{where}: {message}")
        elif e["type"] == "missing":
            problems.append(f"Missing {where}")
        else:
            problems.append(f"Invalid {where}: {e['input']!r} ({e['msg']})")
    return "; ".join(problems)
