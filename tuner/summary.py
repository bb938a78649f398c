"""Summary statistics of repeated runs: as the LODO paper reports them (lodo.md §3.6: the window
of evaluations a run is scored on, the window mean of one run and mean ± std over runs), and as
the AdamQLR and one-pass papers do (clarke.md §2.4, §5.7: medians with a bootstrap spread)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_int_at_least
from .trial import TrialResult

PAPER_RULE = "evaluations strictly inside (0.9·M, M) (lodo.md §3.6)"


@dataclass(frozen=True)
class Window:
    """Evaluations ``first`` … ``last`` (1-based, both included) and the rule that chose them."""

    first: int
    last: int
    rule: str  # PAPER_RULE, or the fallback's in words


def window(total: int) -> Window:
    """The evaluations a run of ``total`` (M) evaluations is scored on: the paper's, strictly inside
    (0.9·M, M) (Rosenbrock, M = 200: 181…199); where that is empty (M ≤ 10), the last evaluation."""
    check_int_at_least("steps", total, 1)
    # integer arithmetic: x > 0.9·M exactly when 10·x > 9·M, with no rounding of 0.9·M
    first, last = 9 * total // 10 + 1, total - 1
    if first <= last:
        return Window(first, last, PAPER_RULE)
    empty = f"the paper's window, evaluations strictly inside (0.9·M, M), is empty for M = {total}"
    return Window(total, total, f"last evaluation ({empty})")


def window_mean(losses: list[float], total: int) -> float:
    """Mean of a run's ``losses`` over ``window(total)``.

    Non-finite (or missing, for a run that stopped early) → +inf.
    """
    w = window(total)
    values = losses[w.first - 1 : w.last]
    if len(values) < w.last - w.first + 1 or not all(math.isfinite(v) for v in values):
        return math.inf
    return sum(values) / len(values)


@dataclass(frozen=True)
class Summary:
    optimizer: str
    mean: float
    std: float
    runs: int
    diverged: int
    steps_per_second: float
    errors: int


def summarize(optimizer: str, results: list[TrialResult], total: int) -> Summary:
    """Mean ± population std (ddof 0) of the window means of the runs with status ok.

    ``errors`` counts the runs that raised; ``diverged`` those that diverged, and also ok runs
    whose window mean is not finite: the losses are finite but their sum overflows (losses near
    1e308), or a trial function other than ``run_trial`` returned a short or non-finite curve
    unmarked. The paper counts every run with a non-finite window as diverged (lodo.md §3.6).
    Steps/s leaves errors out: their wall time is the time to the exception, with no steps.
    """
    values = [window_mean(r.losses, total) for r in results if r.status == "ok"]
    finite = [v for v in values if math.isfinite(v)]
    rates = [r.steps_per_second for r in results if r.status != "error" and r.wall_time > 0]
    return Summary(
        optimizer=optimizer,
        mean=statistics.fmean(finite) if finite else math.inf,
        std=statistics.pstdev(finite) if finite else math.nan,
        runs=len(results),
        diverged=sum(r.status == "diverged" for r in results) + len(values) - len(finite),
        steps_per_second=statistics.fmean(rates) if rates else math.nan,
        errors=sum(r.status == "error" for r in results),
    )


def bootstrap_median(values: Sequence[float], *, resamples: int, seed: int = 0) -> dict[str, float | None]:
    """The median of ``values`` and the mean ± std of the medians of ``resamples`` bootstrap
    resamples (with replacement), as clarke.md §2.4 and §5.7 summarise repeated runs.
    Non-finite values are left out; all None when nothing finite is left."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return {"median": None, "bootstrap_mean": None, "bootstrap_std": None, "runs": 0}
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(finite, size=(resamples, finite.size), replace=True), axis=1)
    return {
        "median": float(np.median(finite)),
        "bootstrap_mean": float(medians.mean()),
        "bootstrap_std": float(medians.std()),
        "runs": int(finite.size),
    }


def bootstrap_summary(
    evaluation: Mapping[str, Any], *, resamples: int = 50, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per optimizer of a :func:`tuner.evaluate.evaluate` document: the bootstrap median of the
    window loss and of every final metric over the runs (resamples 50, as §2.4)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in evaluation["optimizers"].items():
        runs = entry["per_run"]
        names = sorted({k for r in runs for k in r["metrics"]})
        out[name] = {
            "window_loss": bootstrap_median([r["window_mean"] for r in runs], resamples=resamples, seed=seed),
            **{
                k: bootstrap_median([r["metrics"].get(k) for r in runs], resamples=resamples, seed=seed)
                for k in names
            },
        }
    return out


def spread(values: Sequence[float | None], *, resamples: int, level: float, seed: int) -> dict[str, Any]:
    """How repeated results spread (:mod:`tuner.studies`): over the finite ``values``, the median,
    the quartiles ``q25``/``q75`` (numpy's linear interpolation), ``min``, ``max``, and a
    percentile bootstrap interval of the median at ``level``: the (1 − level)/2 and (1 + level)/2
    quantiles of the medians of ``resamples`` resamples with replacement, drawn as
    ``numpy.random.default_rng(seed).choice(values, size=(resamples, n))``. ``n`` counts the
    finite values; every statistic is None when there are none."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return dict.fromkeys(("median", "q25", "q75", "min", "max", "ci_low", "ci_high"), None) | {"n": 0}
    medians = np.median(np.random.default_rng(seed).choice(finite, size=(resamples, finite.size)), axis=1)
    q25, median, q75 = np.percentile(finite, [25, 50, 75])
    ci_low, ci_high = np.percentile(medians, [50 * (1 - level), 50 * (1 + level)])
    return {
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "n": int(finite.size),
    }
