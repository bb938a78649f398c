"""Summary statistics of repeated runs, as the LODO paper reports them (lodo.md §3.6): the window
mean of one run and mean ± std over runs."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .trial import TrialResult


def window_mean(losses: list[float], total: int) -> float:
    """Mean loss over evaluations strictly inside (0.9·M, M), 1-based (Rosenbrock: 181…199).

    Non-finite (or missing, for a run that stopped early) → +inf.
    """
    first, last = math.floor(0.9 * total) + 1, total - 1
    window = losses[first - 1 : last]
    if len(window) < last - first + 1 or not all(math.isfinite(v) for v in window):
        return math.inf
    return sum(window) / len(window)


@dataclass(frozen=True)
class Summary:
    optimizer: str
    mean: float
    std: float
    runs: int
    diverged: int
    steps_per_second: float


def summarize(optimizer: str, results: list[TrialResult], total: int) -> Summary:
    """Mean ± population std (ddof 0) of the window means of the runs that did not diverge."""
    values = [window_mean(r.losses, total) for r in results]
    finite = [v for v in values if math.isfinite(v)]
    rates = [r.steps_per_second for r in results if r.wall_time > 0]
    return Summary(
        optimizer=optimizer,
        mean=statistics.fmean(finite) if finite else math.inf,
        std=statistics.pstdev(finite) if finite else math.nan,
        runs=len(results),
        diverged=len(values) - len(finite),
        steps_per_second=statistics.fmean(rates) if rates else math.nan,
    )
