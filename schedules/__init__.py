"""GA schedules, search spaces and the paper's tuned values, as data files with validated loaders.

* :mod:`~schedules.transforms` — the §3.1 normalizations ``log``, ``log1m`` and ``logit``;
* :mod:`~schedules.spaces` — per-optimizer search spaces (``code`` or ``paper`` normalization);
* :mod:`~schedules.schedule` — per-task generations (σ, steps), population, final length, and the
  §3.5 halving of the learning rate;
* :mod:`~schedules.paper` — Table 6's tuned values, strict or completed with the registry
  defaults and each value's source;
* :mod:`~schedules.asha` — the AdamQLR paper's ASHA search spaces.

Schedules and spaces are frozen pydantic models that round-trip through ``model_dump`` /
``model_validate``; a Table 6 row is a frozen dataclass.
"""

from .asha import AshaSpace, Distribution, asha_optimizers, asha_space, batch_sizes
from .paper import PaperEntry, paper_entry, paper_values
from .schedule import (
    SOURCES,
    Generation,
    Schedule,
    apply_halving,
    describe_schedules,
    halved_names,
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
    "PaperEntry",
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
    "halved_names",
    "load_schedule",
    "load_space",
    "paper_entry",
    "paper_values",
    "schedule_for",
    "space_for",
]
