"""The tuning strategies: the LODO paper's GA, ASHA on Ray Tune, one-pass implicit HPO."""

from __future__ import annotations

from typing import Any

import lodo
import schedules

from .asha import describe as describe_asha
from .onepass import describe as describe_onepass

STRATEGIES = ("ga", "asha", "onepass")


def describe_strategies() -> list[dict[str, Any]]:
    """Each strategy's name, summary, optimizers and settings (defaults), JSON-ready."""
    return [
        {
            "name": "ga",
            "summary": "the LODO paper's genetic algorithm (lodo.md §3), one checkpoint per generation",
            "optimizers": list(lodo.OPTIMIZERS),
            "settings": {
                "schedule": " | ".join(schedules.SOURCES),
                "normalization": " | ".join(schedules.NORMALIZATIONS),
                "decay_transform": " | ".join(schedules.DECAY_TRANSFORMS),
                "generations": "from the task's schedule",
                "population": "from the task's schedule",
            },
            "unit": "steps count loss evaluations; schedules per task (`schedules/data/schedules.json`)",
        },
        describe_asha(),
        describe_onepass(),
    ]
