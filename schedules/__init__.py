"""GA schedules, search spaces and the paper's tuned values, as data files with validated loaders.

* :mod:`~schedules.transforms` — the §3.1 normalizations ``log``, ``log1m`` and ``logit``;
* :mod:`~schedules.spaces` — per-optimizer search spaces (``code`` or ``paper`` normalization);
* :mod:`~schedules.schedule` — per-task generations (σ, steps), population, final length, and the
  §3.5 halving;
* :mod:`~schedules.paper` — Table 6's tuned values;
* :mod:`~schedules.asha` — the AdamQLR paper's ASHA search spaces.

Everything is a frozen pydantic model that round-trips through ``model_dump`` / ``model_validate``.
"""

from .asha import AshaSpace, Distribution, asha_optimizers, asha_space, batch_sizes
from .paper import paper_values
from .schedule import (
    SOURCES,
    Generation,
    Schedule,
    apply_halving,
    describe_schedules,
    load_schedule,
    schedule_for,
)
from .spaces import DECAY_TRANSFORMS, NORMALIZATIONS, ParamSpace, SearchSpace, load_space, space_for
from .transforms import TRANSFORMS, decode, encode

__all__ = [
    "DECAY_TRANSFORMS",
    "NORMALIZATIONS",
    "SOURCES",
    "TRANSFORMS",
    "AshaSpace",
    "Distribution",
    "Generation",
    "ParamSpace",
    "Schedule",
    "SearchSpace",
    "apply_halving",
    "asha_optimizers",
    "asha_space",
    "batch_sizes",
    "decode",
    "describe_schedules",
    "encode",
    "load_schedule",
    "load_space",
    "paper_values",
    "schedule_for",
    "space_for",
]
