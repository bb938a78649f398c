"""The LODO paper's tuned hyperparameters (Table 6), loaded from ``data/table6.json``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def _table6() -> dict:
    return json.loads(resources.files(__package__).joinpath("data/table6.json").read_text())


def paper_values(task: str, optimizer: str) -> dict[str, float]:
    """Table 6's values for (task, optimizer), before any halving.

    Raises ValueError when the paper has no entry, or when one of its values was lost in
    extraction (the message names which), rather than silently falling back to defaults.
    """
    values = _table6()["values"]
    entry = values.get(task, {}).get(optimizer)
    if entry is None:
        pairs = [f"{t}/{o}" for t, opts in values.items() for o in opts]
        raise ValueError(f"No Table 6 values for {task}/{optimizer} (available: {', '.join(pairs)})")
    missing = [k for k, v in entry.items() if v is None]
    if missing:
        raise ValueError(f"Table 6 values for {task}/{optimizer} were lost in extraction: {missing}")
    return dict(entry)
