"""One message form for every check in ``schedules``: the house ``Invalid <name>: <value> (allowed: …)``,
and pydantic's errors rewritten into it (field path, what was wrong, what is allowed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError


def invalid(name: str, value: object, allowed: str) -> ValueError:
    """``ValueError("Invalid <name>: <value> (allowed: <allowed>)")``, for the caller to raise."""
    return ValueError(f"Invalid {name}: {value} (allowed: {allowed})")


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r} (allowed keys: {' | '.join(_fields_at(model, error['loc']))})"
    prefix = f"{where}: " if where else ""
    if error["type"] == "missing":
        return f"{prefix}required key is missing"
    if error["type"] == "value_error":  # raised by a validator: already in the house form
        return f"{prefix}{error['ctx']['error']}"
    return f"{prefix}{error['msg']} (got {error['input']!r})"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or one inside ``X | None``, ``tuple[X, ...]``,
    ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model in which ``loc``'s last key was found."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:  # an index or a key of a tuple or dict field
            continue
        inner = _model_in(field.annotation)
        if inner is not None:
            model = inner
    return list(model.model_fields)


def validated(model: type[BaseModel], data: Any, what: str) -> Any:
    """``model.model_validate(data)``, with a pydantic error re-raised as one ValueError naming
    ``what``, every failing field, the constraint it broke and the value it got."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(_describe(e, model) for e in err.errors(include_url=False))
        raise ValueError(f"Invalid {what}: {problems}") from None


def read_json(path: str | Path, what: str) -> Any:
    """The parsed JSON file, or a ValueError naming the file and the syntax error
    (FileNotFoundError passes through: it already names the path)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Invalid {what} file {str(path)!r}: not JSON ({err})") from None
