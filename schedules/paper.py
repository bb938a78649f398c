"""The LODO paper's tuned hyperparameters (Table 6), loaded from ``data/table6.json``.

:func:`paper_values` is the strict form (a value lost in extraction is an error);
:func:`paper_entry` is the complete form a final run needs: every registry hyperparameter of the
optimizer, each with where its value came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import lodo

from ._errors import invalid

PAPER = "paper Table 6"
LOST = "default (Table 6 lost)"
NOT_LISTED = "default (not in Table 6)"


@dataclass(frozen=True)
class PaperEntry:
    """Table 6's row for one (task, optimizer), completed to every registry hyperparameter.

    ``values`` and ``sources`` follow the registry's order. ``sources[name]`` is
    ``"paper Table 6"``, ``"default (Table 6 lost)"`` (null in the data: lost in extraction, the
    registry default stands in) or ``"default (not in Table 6)"`` (the row does not list it, e.g.
    L-BFGS's ε on the bowl). ``lost`` names the nulls; ``note`` is the data file's remark on this
    row (several joined), or None. Values are before any halving (§3.8).
    """

    values: dict[str, float]
    sources: dict[str, str]
    lost: tuple[str, ...]
    note: str | None


@cache
def _table6() -> dict:
    return json.loads(resources.files(__package__).joinpath("data/table6.json").read_text())


def _row(task: str, optimizer: str) -> dict[str, float | None]:
    values = _table6()["values"]
    row = values.get(task, {}).get(optimizer)
    if row is None:
        pairs = [f"{t}/{o}" for t, opts in values.items() for o in opts]
        raise ValueError(f"No Table 6 values for {task}/{optimizer} (available: {', '.join(pairs)})")
    return row


def _note(task: str, optimizer: str) -> str | None:
    """The notes on the row. Keys are ``<optimizer>[.<hyperparameter>][@<task>]``; a key without
    a task is about that optimizer's rows on every task (RMSprop's surviving learning rates)."""
    texts = []
    for key, text in _table6()["notes"].items():
        head, _, on_task = key.partition("@")
        if head.partition(".")[0] == optimizer and on_task in ("", task):
            texts.append(text)
    return " ".join(texts) or None


def paper_values(task: str, optimizer: str) -> dict[str, float]:
    """Table 6's values for (task, optimizer), before any halving.

    Raises ValueError when the paper has no entry, or when one of its values was lost in
    extraction (the message names which), rather than silently falling back to defaults; see
    :func:`paper_entry` for the form with defaults standing in, said so.
    """
    row = _row(task, optimizer)
    missing = [k for k, v in row.items() if v is None]
    if missing:
        raise ValueError(f"Table 6 values for {task}/{optimizer} were lost in extraction: {missing}")
    return dict(row)


def paper_entry(task: str, optimizer: str) -> PaperEntry:
    """Table 6's row for (task, optimizer) over all of the optimizer's registry hyperparameters:
    the paper's value where it survives, the registry default where it was lost or is not listed,
    each with its source (see :class:`PaperEntry`). Before any halving.

    No row for the pair is a ValueError naming the available pairs (as :func:`paper_values`); a
    row key that is not one of the optimizer's registry hyperparameters is a ValueError (an error
    in the data file).
    """
    row = _row(task, optimizer)
    spec = lodo.get(optimizer)
    unknown = [k for k in row if k not in spec.names]
    if unknown:
        allowed = " | ".join(spec.names) or "none"
        raise invalid(f"Table 6 hyperparameter of {task}/{optimizer}", repr(unknown[0]), allowed)
    values, sources = {}, {}
    for name, default in spec.defaults.items():
        value = row.get(name)
        values[name] = default if value is None else float(value)
        sources[name] = PAPER if value is not None else LOST if name in row else NOT_LISTED
    lost = tuple(name for name in spec.names if name in row and row[name] is None)
    return PaperEntry(values, sources, lost, _note(task, optimizer))
