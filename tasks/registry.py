"""The task registry: names → specifications, and the one way to build a task.

Building validates everything first (name, seed, device, dtype, every option) and raises
``ValueError`` naming what is wrong and what is allowed; only then does it read data.
"""

from __future__ import annotations

from typing import Any

import torch

from tasks import (
    diabetes_mlp,
    digits_autoregression,
    digits_mlp,
    fashion_mnist_mlp,
    mnist_autoregression,
    noisy_quadratic_bowl,
    resnet18_cifar10,
    rosenbrock,
    rosenbrock_classic,
    uci_energy,
    uci_protein,
)
from tasks._spec import TaskSpec
from tasks.base import Task

SPECS: tuple[TaskSpec, ...] = (
    noisy_quadratic_bowl.SPEC,
    rosenbrock.SPEC,
    rosenbrock_classic.SPEC,
    mnist_autoregression.SPEC,
    resnet18_cifar10.SPEC,
    uci_energy.SPEC,
    uci_protein.SPEC,
    fashion_mnist_mlp.SPEC,
    digits_autoregression.SPEC,
    digits_mlp.SPEC,
    diabetes_mlp.SPEC,
)
TASK_NAMES: tuple[str, ...] = tuple(spec.name for spec in SPECS)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def spec(name: str) -> TaskSpec:
    """The specification registered under ``name``."""
    for candidate in SPECS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"Unknown task {name!r} (allowed: {' | '.join(TASK_NAMES)})")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r} (allowed: an integer >= 0)")
    return seed


def _check_device(device: Any) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"Invalid device: {device!r} (allowed: a torch device such as 'cpu' or 'cuda:0')"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {device!r} (allowed: cpu; this machine has no usable CUDA device)")
    return resolved


def _check_dtype(dtype: Any, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    resolved = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in _DTYPES.values():
        raise ValueError(f"Invalid dtype: {dtype!r} (allowed: float32 | float64, or the torch dtypes)")
    return resolved


def build(
    name: str,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    **options: Any,
) -> Task:
    """A seeded instance of task ``name`` on ``device``.

    ``dtype`` defaults to the task's (float64 for the bowl and Rosenbrock, float32 otherwise);
    ``options`` are the task's build options (see :func:`describe`), defaults filled in.
    """
    task_spec = spec(name)
    resolved = task_spec.resolve_options(options)
    return task_spec.build(
        seed=_check_seed(seed),
        device=_check_device(device),
        dtype=_check_dtype(dtype, task_spec.dtype),
        **resolved,
    )


def describe() -> list[dict[str, Any]]:
    """One JSON-ready dict per task: name, description, exact parameter count at the default
    options, default dtype, options (name, default, description) and what it stands in for.
    Reads no data. ``vectorized``: the task has a population form (tasks.population)."""
    from tasks import population  # imports this module's tasks

    return [
        {**task_spec.describe(), "vectorized": population.supports(task_spec.name)} for task_spec in SPECS
    ]
