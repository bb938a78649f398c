"""Population optimizers: the registry's optimizers stepping P members as one batched program.

``SUPPORTED`` names the optimizers with a population form; :func:`build` makes one from the
stacked parameters, each member's hyperparameter values and seed, as ``OptimizerSpec.build``
makes the per-trial optimizer. The others (L-BFGS, BFGS, Newton, AdamQLR, ...) run per trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lodo.registry import get

from .base import PopulationOptimizer, Preconditioner
from .baselines import BASELINES
from .lodo_family import LODO_FAMILY

__all__ = ["SUPPORTED", "PopulationOptimizer", "Preconditioner", "build", "supports"]

_BUILDERS = {**LODO_FAMILY, **BASELINES}
SUPPORTED: tuple[str, ...] = tuple(_BUILDERS)


def supports(name: str) -> bool:
    return name in _BUILDERS


def build(
    name: str,
    params: torch.Tensor,
    values: Sequence[Mapping[str, float]],
    *,
    seeds: Sequence[int],
    options: Mapping[str, Any] | None = None,
) -> PopulationOptimizer:
    """The population form of optimizer ``name`` for the members' flat parameters ``params`` (``[P, n]``).

    ``values[i]`` and ``seeds[i]`` are member i's hyperparameters (completed by the registry's
    defaults, unknown names refused as there) and trial seed; ``options`` are the registry's
    constructor options (``{"meta_dtype": "float32"}``), checked as there.
    """
    spec = get(name)
    if name not in _BUILDERS:
        raise ValueError(f"Invalid optimizer for a population: {name!r} (allowed: {' | '.join(SUPPORTED)})")
    if len(values) != len(seeds) or not values:
        raise ValueError(f"Invalid population: {len(values)} value sets for {len(seeds)} seeds")
    completed = [spec.check_values(v) for v in values]
    kwargs = spec.check_options(options or {})
    return _BUILDERS[name](params, completed, seeds=list(seeds), **kwargs)
