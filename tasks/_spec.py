"""Task specifications: what the registry knows about a task before building it.

Options are declared once (name, default, description, check) and validated in one message form,
``Invalid <name>: <value> (allowed: <rule>)``, the form the optimizers use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.base import Task

Check = Callable[[str, Any], Any]


def _fail(name: str, value: object, allowed: str) -> None:
    raise ValueError(f"Invalid {name}: {value!r} (allowed: {allowed})")


def positive_float(name: str, value: Any) -> float:
    """A finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        _fail(name, value, "a finite number > 0")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "an integer >= 1")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    """Null (no limit) or an integer >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "null or an integer >= 1")
    return value


def boolean(name: str, value: Any) -> bool:
    """True or False (not 0/1: a JSON spec that says 1 probably meant something else)."""
    if not isinstance(value, bool):
        _fail(name, value, "true | false")
    return value


def optional_path(name: str, value: Any) -> Path | None:
    """Null (the default data directory) or a path."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or str(value) == "":
        _fail(name, value, "null or a directory path")
    return Path(value)


def choice(*choices: str) -> Check:
    """One of a fixed set of strings."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            _fail(name, value, " | ".join(choices))
        return value

    check.__doc__ = " | ".join(choices)
    return check


@dataclass(frozen=True)
class Option:
    """One build option of a task."""

    name: str
    default: Any
    description: str
    check: Check

    @property
    def allowed(self) -> str:
        """The values it takes, in words (its check's docstring: "an integer >= 1")."""
        words = (self.check.__doc__ or "any value").strip().rstrip(".")
        return words[:1].lower() + words[1:]

    def describe(self) -> dict[str, Any]:
        default = str(self.default) if isinstance(self.default, Path) else self.default
        return {
            "name": self.name,
            "default": default,
            "description": self.description,
            "allowed": self.allowed,
        }


DATA_DIR = Option(
    "data_dir",
    None,
    "directory holding the dataset files; null = $LODOTUNE_DATA_DIR, else ./data (read at build time)",
    optional_path,
)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: how to build it, and what to say about it without building it.

    ``build(seed=, device=, dtype=, **options)`` returns the instance; ``count_parameters(**options)``
    returns the exact number of trainable scalars without data or real memory (meta-device build or
    formula).
    """

    name: str
    description: str
    dtype: torch.dtype
    options: tuple[Option, ...]
    build: Callable[..., Task]
    count_parameters: Callable[..., int]
    stands_in_for: str | None = None

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, unknown names and bad values rejected."""
        known = {option.name: option for option in self.options}
        for key in given:
            if key not in known:
                allowed = " | ".join(f"{n} ({o.allowed})" for n, o in known.items()) or "no options"
                raise ValueError(f"Unknown option {key!r} for task {self.name!r} (allowed: {allowed})")
        return {name: option.check(name, given.get(name, option.default)) for name, option in known.items()}

    def describe(self) -> dict[str, Any]:
        defaults = self.resolve_options({})
        return {
            "name": self.name,
            "description": self.description,
            "num_parameters": int(self.count_parameters(**defaults)),
            "dtype": str(self.dtype).removeprefix("torch."),
            "options": [option.describe() for option in self.options],
            "stands_in_for": self.stands_in_for,
        }


def count_module_parameters(factory: Callable[[], torch.nn.Module]) -> int:
    """Trainable scalars of a model built on the meta device (shapes only, no memory, no RNG)."""
    with torch.device("meta"):
        model = factory()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
