"""Results as tables for people: plain data (title, columns, rows, lines) that a front end renders
(the command line with rich); the strategies and the final evaluation produce them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Summary:
    """A document as a table: ``columns``, ``rows`` (strings), and lines printed below it."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    lines: list[str] = field(default_factory=list)
