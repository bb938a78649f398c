"""The figures a run writes: ``curves.png`` (an evaluation's loss curves) and ``search.png`` (a GA
run's search, generation by generation).

The rules that shape them are pure functions of the data, each stated where it is defined:

* noisy or not (:func:`is_noisy`): decides between a smoothed curve over a faint raw band (noisy
  tasks: the noisy quadratic bowl, minibatch training) and the plain median with its IQR band
  (deterministic tasks: Rosenbrock);
* the smoothing window (:func:`smoothing_half_width`, :func:`running_mean`): about 1% of the run;
* log axes (:func:`spans_decades`, :func:`moves_early`): y log where the values span more than
  1.5 decades, x log where a run of >= 10,000 evaluations moves most early;
* a zoom on the last quarter of the run beside noisy figures, where the levels are compared.

Figures are built on matplotlib's Agg canvas directly (no pyplot, so no global figure state) and
matplotlib is imported only when a figure is drawn: importing this module stays cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from schedules import transforms as hp_transforms

from .summary import summarize, window
from .trial import TrialResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LOG_DECADES = 1.5  # an axis goes log when its positive values span more than this many decades
LONG_RUN = 10_000  # evaluations from which a run may get a log x-axis
EARLY_FRACTION = 0.01  # "early": the first 1% of the run
LATE_FRACTION = 0.1  # "late": after the first 10% of the run
SMOOTHING_FRACTION = 0.01  # running-mean window, as a fraction of the run length
MIN_HALF_WIDTH = 2  # so the window is never under 5 evaluations
NOISY_TORTUOSITY = 10.0  # see is_noisy
MIN_POINTS_FOR_NOISE = 20  # fewer finite points in the second half: too short to call noisy
ZOOM_FROM = 0.75  # the zoom panel shows evaluations from 75% of the run on
DIVERGENCE_HEADROOM = 10.0  # the y-range stops at this many times the highest starting loss
# task metrics that are a loss level worth a horizontal line, and what to call them
REFERENCE_METRICS = {"optimal_loss": "Newton optimum"}
DPI = 120


# ---------------------------------------------------------------------------------------------
# Pure helpers: the rules, testable without drawing anything


def smoothing_half_width(length: int) -> int:
    """Half-width h of the running mean for a run of ``length`` evaluations: round(0.5% of the
    length), at least 2, so the full window 2h + 1 is about 1% of the run and never under 5."""
    return max(MIN_HALF_WIDTH, round(SMOOTHING_FRACTION * length / 2))


def running_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    """Centred running mean: point t (0-based) is the mean of ``values[t - h_t : t + h_t + 1]``
    with h_t = min(half_width, t): the full window 2·half_width + 1, narrowed symmetrically near
    the start (the first point is the raw value) so the early descent is not averaged away and no
    point is shifted. The last ``half_width`` points, whose window would run past the end, are
    NaN: narrowing there would end the line on raw noise just where the levels are compared. NaN
    also where a window holds a non-finite value: a divergence is not averaged into the curve."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    t = np.arange(n)
    h = np.minimum(half_width, t)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    bad = np.concatenate([[0], np.cumsum(~finite)])
    low, high = t - h, np.minimum(t + h + 1, n)
    out = (sums[high] - sums[low]) / np.maximum(high - low, 1)
    out[(bad[high] - bad[low] > 0) | (t + h + 1 > n)] = np.nan
    return out


def tortuosity(curve: np.ndarray) -> float:
    """Path length over net change of ln(loss) across the second half of ``curve``:
    Σ|Δ ln L| / |ln L_last − ln L_first| over its finite positive points. 1 for a monotone curve,
    a few for a deterministic oscillation, hundreds for noise around a level. NaN when the second
    half has fewer than 20 such points; 0 for a constant curve, inf for one that wanders and comes
    back exactly."""
    tail = np.asarray(curve, dtype=float)[len(curve) // 2 :]
    tail = tail[np.isfinite(tail) & (tail > 0)]
    if len(tail) < MIN_POINTS_FOR_NOISE:
        return math.nan
    logs = np.log(tail)
    path = float(np.abs(np.diff(logs)).sum())
    net = abs(float(logs[-1] - logs[0]))
    if path == 0:
        return 0.0
    return path / net if net > 0 else math.inf


def is_noisy(median_curves: Sequence[np.ndarray]) -> bool:
    """Whether the figure is of a noisy task: some optimizer's median curve has a tortuosity
    (:func:`tortuosity`, second half of the run) above 10. The noisy quadratic bowl measures in
    the hundreds to thousands, Rosenbrock 1 (monotone descents) to about 3 (momentum's
    deterministic oscillation), so the threshold sits well clear of both. Decided once for the
    whole figure so every optimizer is drawn the same way."""
    return any(tortuosity(curve) > NOISY_TORTUOSITY for curve in median_curves)


FITNESS_CEILING_FACTOR = 1e3


def spans_decades(values: Sequence[float] | np.ndarray, decades: float = LOG_DECADES) -> bool:
    """Whether a log axis is wanted: the finite values are all positive and max/min > 10^decades
    (default 1.5 decades, about a factor 32)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or finite.min() <= 0:
        return False
    return bool(finite.max() / finite.min() > 10**decades)


def moves_early(curve: np.ndarray, total: int) -> bool:
    """Whether a curve's interesting part is early: its largest distance from its final level
    (in ln loss) during the first 1% of the run is more than twice its largest distance after the
    first 10%. The final level is the curve's mean over the reported window
    (:func:`tuner.summary.window`). A power-law descent or an early transient around a noise floor
    moves early; a steady exponential descent (a straight line on a log-y, linear-x axis) does not.
    """
    curve = np.asarray(curve, dtype=float)
    w = window(total)
    if w.last > len(curve):
        return False
    with warnings.catch_warnings():  # all-NaN stretches of a diverged median
        warnings.simplefilter("ignore", RuntimeWarning)
        final = float(np.nanmean(curve[w.first - 1 : w.last]))
        if not (math.isfinite(final) and final > 0):
            return False
        distance = np.abs(np.log(np.where(curve > 0, curve, np.nan)) - math.log(final))
        early = np.nanmax(distance[: max(1, math.ceil(EARLY_FRACTION * total))], initial=-np.inf)
        late = np.nanmax(distance[max(0, math.ceil(LATE_FRACTION * total) - 1) :], initial=-np.inf)
    return bool(early > 2 * late)


def wants_log_x(main_curves: Sequence[np.ndarray], total: int) -> bool:
    """x log when the run is long (>= 10,000 evaluations) and some optimizer's drawn curve moves
    early (:func:`moves_early`): the interesting part would be a sliver at the left of a linear
    axis."""
    return total >= LONG_RUN and any(moves_early(curve, total) for curve in main_curves)


def outcome_note(runs: Sequence[TrialResult]) -> str:
    """ "3/8 diverged, 1/8 errors", or "" when every run was ok."""
    diverged = sum(r.status == "diverged" for r in runs)
    errors = sum(r.status == "error" for r in runs)
    parts = [f"{diverged}/{len(runs)} diverged"] * bool(diverged) + [f"{errors}/{len(runs)} errors"] * bool(
        errors
    )
    return ", ".join(parts)


def loss_matrix(runs: Sequence[TrialResult]) -> np.ndarray:
    """Runs × evaluations, NaN past a run's end and wherever a loss is not finite."""
    length = max((len(r.losses) for r in runs), default=0)
    curves = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        curves[i, : len(r.losses)] = r.losses
    curves[~np.isfinite(curves)] = np.nan
    return curves


def reference_levels(by_optimizer: Mapping[str, Sequence[TrialResult]]) -> list[tuple[str, float]]:
    """(label, loss) of every reference metric the runs carry (:data:`REFERENCE_METRICS`), as the
    mean over the runs that report it: "Newton optimum 7.41" for the noisy quadratic bowl."""
    levels = []
    for key, name in REFERENCE_METRICS.items():
        found = [
            r.metrics[key]
            for runs in by_optimizer.values()
            for r in runs
            if key in r.metrics and math.isfinite(r.metrics[key])
        ]
        if found:
            value = float(np.mean(found))
            levels.append((f"{name} {value:.3g}", value))
    return levels


def run_length(by_optimizer: Mapping[str, Sequence[TrialResult]]) -> int:
    """The evaluations each run was asked for (its spec's steps), else the longest curve."""
    runs = [r for rs in by_optimizer.values() for r in rs]
    steps = [r.spec.steps for r in runs if getattr(r.spec, "steps", None)]
    return max(steps) if steps else max((len(r.losses) for r in runs), default=0)


def elite_means(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Hyperparameter → the decoded elite mean (natural values, as the trials use them) after
    each generation of one study, in generation order: the records' ``elite_mean.values``, which
    the GA decodes from the mean of the elite's coordinates (re-encoded from the values used)."""
    ordered = sorted(records, key=lambda r: r["generation"])
    names = list(ordered[0]["elite_mean"]["values"]) if ordered else []
    return {name: np.array([float(r["elite_mean"]["values"][name]) for r in ordered]) for name in names}


def infer_transform(records: Sequence[Mapping[str, Any]], name: str) -> str | None:
    """The transform of hyperparameter ``name``, read off the records: the first of log, log1m,
    logit whose decode maps every individual's coordinate to its value (to 1e-9 relative);
    None when none does (a space whose transform this module does not know)."""
    pairs = [
        (float(ind["coords"][name]), float(ind["values"][name]))
        for record in records
        for ind in record["population"]
        if name in ind.get("coords", {}) and name in ind.get("values", {})
    ]
    if not pairs:
        return None
    for transform in hp_transforms.TRANSFORMS:
        if all(
            math.isclose(hp_transforms.decode(transform, u), x, rel_tol=1e-9, abs_tol=1e-300)
            for u, x in pairs
        ):
            return transform
    return None


@dataclass(frozen=True)
class GenerationFitness:
    """One generation's individuals: their finite fitnesses and how many were not finite."""

    generation: int
    finite: list[float]
    non_finite: int


def generation_fitness(records: Sequence[Mapping[str, Any]]) -> list[GenerationFitness]:
    """Per generation (in order): the finite fitnesses, and the count of individuals whose
    fitness is None or not finite (diverged or raised), so none is dropped silently."""
    out = []
    for record in sorted(records, key=lambda r: r["generation"]):
        values = [ind.get("fitness") for ind in record["population"]]
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        out.append(GenerationFitness(int(record["generation"]), finite, len(values) - len(finite)))
    return out


# ---------------------------------------------------------------------------------------------
# curves.png


@dataclass(frozen=True)
class OptimizerCurve:
    """What is drawn for one optimizer: the per-evaluation quartiles over its runs, the curve the
    line shows (``main``: the median, or its running mean on noisy figures) and the runs' first
    losses (for the divergence headroom)."""

    label: str
    q25: np.ndarray
    q50: np.ndarray
    q75: np.ndarray
    starts: np.ndarray
    runs: int
    reported_mean: float | None  # mean over the ok runs of their window means (results.md)

    @property
    def x(self) -> np.ndarray:
        return np.arange(1, len(self.q50) + 1)


def _optimizer_curve(name: str, runs: Sequence[TrialResult]) -> OptimizerCurve | None:
    curves = loss_matrix(runs)
    if curves.shape[1] == 0:
        return None
    note = outcome_note(runs)
    with warnings.catch_warnings():  # evaluations after every run diverged are all-NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, q50, q75 = np.nanpercentile(curves, [25, 50, 75], axis=0)
    starts = curves[:, 0][np.isfinite(curves[:, 0])]
    reported = summarize(name, list(runs), runs[0].spec.steps).mean if runs else math.inf
    label = f"{name} ({note})" if note else name
    return OptimizerCurve(
        label, q25, q50, q75, starts, len(runs), reported if math.isfinite(reported) else None
    )


def _y_limits(
    drawn: Sequence[np.ndarray], references: Sequence[float], starts: np.ndarray
) -> tuple[float, float]:
    """The span of what the lines show and the reference levels, its top held to 10× the highest
    starting loss so a diverging run does not squash everything else."""
    parts = [np.asarray(d, dtype=float).ravel() for d in drawn] + [np.asarray(references, dtype=float)]
    values = np.concatenate(parts)
    values = values[np.isfinite(values)]
    if values.size == 0:  # every drawn value diverged
        return 1.0, 10.0
    low, high = float(values.min()), float(values.max())
    if starts.size:
        high = min(high, DIVERGENCE_HEADROOM * float(starts.max()))
    return low, max(high, low)


def _pad(low: float, high: float, log: bool) -> tuple[float, float]:
    if log:
        factor = (high / low) ** 0.05
        return low / factor, high * factor
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
    return low - margin, high + margin


def _set_y_range(ax: Axes, low: float, high: float) -> None:
    """Log where the range spans > 1.5 decades (:func:`spans_decades`), padded either way."""
    log = spans_decades([low, high])
    if log:
        ax.set_yscale("log")
    ax.set_ylim(*_pad(low, high, log))


@dataclass(frozen=True)
class CurvesLayout:
    """The figure's decisions, each by its rule: noisy (smoothed, with a zoom panel), the running
    mean's half-width, the run length, and the reference levels (label, loss)."""

    noisy: bool
    half_width: int
    total: int
    references: list[tuple[str, float]]

    @property
    def smoothing_note(self) -> str:
        return (
            f"line: running mean over {2 * self.half_width + 1} evaluations\n(≈1% of the run, narrower"
            " at the start);\nfaint band: raw interquartile range"
        )


def curves_figure(by_optimizer: Mapping[str, Sequence[TrialResult]], *, title: str) -> Figure:
    """The loss curves of an evaluation, one colour per optimizer.

    * Deterministic figures (:func:`is_noisy` false): the median over the runs per evaluation,
      with its interquartile band.
    * Noisy figures: the running mean of that median (:func:`running_mean`, window
      2h + 1 ≈ 1% of the run, :func:`smoothing_half_width`; stated under the axes) over a faint
      band of the raw per-evaluation interquartile range, and beside it a zoom on the last
      quarter of the run (the reported window and what leads to it) with its own y-range, where
      optimizers a few percent apart are told apart.
    * y log where the drawn values span > 1.5 decades; x log for a run of >= 10,000 evaluations
      that moves mostly in its first 1% (:func:`wants_log_x`).
    * A dashed line at each reference level the runs' metrics carry (the bowl's Newton optimum
      ½σ²tr(H) = 7.41) and a shaded span over the evaluations the reported mean is taken on
      (:func:`tuner.summary.window`), each optimizer's reported mean a dotted level across it with
      its value at the right edge (in the zoom on noisy figures).
    * An optimizer none of whose runs recorded a loss has only a legend entry saying so;
      diverged and error counts are in the legend; with no losses at all the figure carries a
      note instead of curves. The y-range stops at 10× the highest starting loss.
    """
    from matplotlib.figure import Figure

    curves, empty = {}, []
    for name, runs in by_optimizer.items():
        curve = _optimizer_curve(name, runs)
        if curve is not None:
            curves[name] = curve
        else:
            note = outcome_note(runs)
            empty.append(f"{name}: no losses" + (f" ({note})" if note else ""))
    total = run_length(by_optimizer)
    layout = CurvesLayout(
        noisy=bool(curves) and is_noisy([c.q50 for c in curves.values()]),
        half_width=smoothing_half_width(total),
        total=total,
        references=reference_levels(by_optimizer),
    )
    fig = Figure(figsize=(12, 5.5) if layout.noisy else (8, 5.5), layout="constrained")
    if layout.noisy:
        ax, zoom = fig.subplots(1, 2, width_ratios=(2, 1))
    else:
        ax, zoom = fig.add_subplot(), None
    fig.suptitle(title)
    if not curves:  # an empty log axis would show made-up ticks
        ax.text(0.5, 0.5, "no run recorded a loss", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        main = {
            name: running_mean(c.q50, layout.half_width) if layout.noisy else c.q50
            for name, c in curves.items()
        }
        _draw_overview(ax, curves, main, layout)
        if zoom is not None:
            _draw_zoom(zoom, curves, main, layout)
    for label in empty:
        ax.plot([], [], " ", label=label)
    if by_optimizer:
        title = layout.smoothing_note if layout.noisy and curves else None
        ax.legend(fontsize="small", loc="best", title=title, title_fontsize="small")
    return fig


def _draw_overview(
    ax: Axes, curves: Mapping[str, OptimizerCurve], main: Mapping[str, np.ndarray], layout: CurvesLayout
) -> None:
    """The whole run: every optimizer's line and band, the references, the window."""
    _draw_lines(ax, curves, main, layout.noisy, labelled=True)
    _draw_references(ax, layout.references, labelled=True)
    _mark_window(ax, layout.total, labelled=True)
    if not layout.noisy:  # noisy figures give the levels in their zoom
        _mark_reported_means(ax, curves, layout.total)
    drawn = list(main.values()) if layout.noisy else [a for c in curves.values() for a in (c.q25, c.q75)]
    starts = np.concatenate([c.starts for c in curves.values()])
    _set_y_range(ax, *_y_limits(drawn, [level for _, level in layout.references], starts))
    length = max(len(c.q50) for c in curves.values())
    if wants_log_x(list(main.values()), layout.total):
        ax.set_xscale("log")
        ax.set_xlim(1, max(layout.total, length))
    seeds = "/".join(map(str, sorted({c.runs for c in curves.values()})))
    kind = "smoothed" if layout.noisy else "IQR band"
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel(f"training loss (median of {seeds} runs, {kind})")


def _draw_zoom(
    ax: Axes, curves: Mapping[str, OptimizerCurve], main: Mapping[str, np.ndarray], layout: CurvesLayout
) -> None:
    """The last quarter of the run, y fitted to the smoothed lines there (and to a reference level
    within a factor 2 of them), so levels a few percent apart separate."""
    from matplotlib.ticker import MaxNLocator

    first = max(1, math.floor(ZOOM_FROM * layout.total))
    _draw_lines(ax, curves, main, layout.noisy, labelled=False)
    late = [m[first - 1 : layout.total] for m in main.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in late])
    if finite.size == 0:  # every run diverged before the last quarter
        ax.text(0.5, 0.5, "no finite loss here", transform=ax.transAxes, ha="center", va="center")
        return
    near = [level for _, level in layout.references if finite.min() / 2 <= level <= 2 * finite.max()]
    _draw_references(
        ax, [(label, level) for label, level in layout.references if level in near], labelled=False
    )
    _mark_window(ax, layout.total, labelled=False)
    _mark_reported_means(ax, curves, layout.total)
    _set_y_range(ax, min([finite.min(), *near]), max([finite.max(), *near]))
    ax.set_xlim(first, layout.total)
    ax.xaxis.set_major_locator(MaxNLocator(4))  # five-digit evaluation numbers would collide
    ax.set_xlabel("loss evaluation")
    ax.set_title(f"last quarter (evals {first}–{layout.total}); dotted: reported mean", fontsize="medium")


def _mark_reported_means(ax: Axes, curves: Mapping[str, OptimizerCurve], total: int) -> None:
    """Each optimizer's reported mean (results.md's number) as a dotted level across the window,
    its value written at the right edge."""
    w = window(total)
    for k, curve in enumerate(curves.values()):
        if curve.reported_mean is None:
            continue
        ax.hlines(
            curve.reported_mean, w.first - 0.5, w.last + 0.5, colors=f"C{k % 10}", linestyles=":", zorder=4
        )
        ax.annotate(
            f"{curve.reported_mean:.4g}",
            (1, curve.reported_mean),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
            color=f"C{k % 10}",
            # a level outside the y-range (a shorter run's, in an ASHA job's final runs) would be
            # drawn off the canvas, far enough to overflow FreeType's raster
            annotation_clip=True,
        )


def _draw_lines(
    ax: Axes,
    curves: Mapping[str, OptimizerCurve],
    main: Mapping[str, np.ndarray],
    noisy: bool,
    *,
    labelled: bool,
) -> None:
    for k, (name, curve) in enumerate(curves.items()):
        colour = f"C{k % 10}"  # fixed per optimizer, so both panels agree
        label = curve.label if labelled else None
        ax.plot(curve.x, main[name], color=colour, label=label, linewidth=1.6 if noisy else 1.2, zorder=3)
        # the raw band is context on noisy figures (faint), the spread itself on the others
        ax.fill_between(
            curve.x, curve.q25, curve.q75, color=colour, alpha=0.1 if noisy else 0.25, linewidth=0
        )


def _draw_references(ax: Axes, references: Sequence[tuple[str, float]], *, labelled: bool) -> None:
    for label, level in references:
        ax.axhline(level, color="black", linestyle="--", linewidth=1, label=label if labelled else None)


def _mark_window(ax: Axes, total: int, *, labelled: bool) -> None:
    """Shade the evaluations the reported mean is taken on (each evaluation k covers k ± ½)."""
    w = window(total)
    span = f"{w.first}–{w.last}" if w.first != w.last else f"{w.first}"
    label = f"reported mean: evals {span}" if labelled else None
    ax.axvspan(w.first - 0.5, w.last + 0.5, color="0.6", alpha=0.25, linewidth=0, label=label)


def plot_curves(by_optimizer: Mapping[str, Sequence[TrialResult]], path: Path, *, title: str) -> None:
    """Write :func:`curves_figure` to ``path`` (PNG)."""
    _save(curves_figure(by_optimizer, title=title), path)


# ---------------------------------------------------------------------------------------------
# search.png


def search_figure(
    studies: Sequence[Sequence[Mapping[str, Any]]], *, title: str, labels: Sequence[str] | None = None
) -> Figure:
    """A GA search, one colour per study (each study: its generation records in order).

    Top row, one panel per hyperparameter: the elite mean after each generation, decoded to the
    natural value (:func:`elite_means`), over the generation's individuals as faint dots, on a log
    axis where the hyperparameter's transform is log (:func:`infer_transform`); a decay's axis
    is spaced as its transform (:func:`_scale_for_transform`), still labelled in natural values.
    Bottom: each generation's fitness, a box plot of
    the individuals' finite fitnesses with the individuals as dots, the studies side by side; the
    count of non-finite fitnesses (diverged or raised) is written above its generation and in the
    panel's title. The fitness axis is log where the finite fitnesses span > 1.5 decades.
    """
    from matplotlib.figure import Figure

    labels = list(labels) if labels is not None else [f"study {k}" for k in range(len(studies))]
    if len(labels) != len(studies):
        raise ValueError(f"Invalid labels: {len(labels)} for {len(studies)} studies (allowed: one per study)")
    names = list(dict.fromkeys(name for records in studies for name in elite_means(records)))
    columns = max(1, len(names))
    fig = Figure(figsize=(max(8, 3.2 * columns), 7.5))
    grid = fig.add_gridspec(2, columns, height_ratios=(1, 1.2))
    colours = [f"C{k % 10}" for k in range(len(studies))]
    for j, name in enumerate(names):
        _draw_elite_mean(fig.add_subplot(grid[0, j]), studies, name, labels, colours)
    if not names:
        ax = fig.add_subplot(grid[0, :])
        ax.text(0.5, 0.5, "no generation recorded", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
    _draw_fitness(fig.add_subplot(grid[1, :]), studies, labels, colours)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _draw_elite_mean(ax: Axes, studies, name: str, labels: Sequence[str], colours: Sequence[str]) -> None:
    """One hyperparameter: each study's elite mean per generation, over its population as faint
    dots, on the axis its transform calls for (:func:`_scale_for_transform`)."""
    transforms, shown = set(), []
    for records, label, colour in zip(studies, labels, colours, strict=True):
        trajectory = elite_means(records).get(name)
        if trajectory is None:
            continue
        generations = [r["generation"] for r in sorted(records, key=lambda r: r["generation"])]
        ax.plot(generations, trajectory, marker="o", markersize=3, color=colour, label=label, zorder=3)
        sampled_at, sampled = population_values(records, name)
        ax.plot(sampled_at, sampled, ".", color=colour, alpha=0.2, markersize=3, zorder=2)
        transforms.add(infer_transform(records, name))
        shown += [*trajectory, *sampled]
    transform = transforms.pop() if len(transforms) == 1 else None
    _scale_for_transform(ax, transform, shown)
    ax.set_title(f"{name} ({transform or 'transform unknown'})", fontsize="medium")
    ax.set_xlabel("generation")
    ax.set_ylabel("elite mean after the generation")
    ax.xaxis.get_major_locator().set_params(integer=True)  # the fitness panel's legend names the studies


def population_values(records: Sequence[Mapping[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(generation, value) of every individual's decoded value of ``name``: the samples drawn."""
    pairs = [
        (record["generation"], float(ind["values"][name]))
        for record in records
        for ind in record["population"]
        if name in ind.get("values", {})
    ]
    return np.array([g for g, _ in pairs], dtype=float), np.array([v for _, v in pairs], dtype=float)


def decay_ticks(values: Sequence[float]) -> list[float]:
    """Ticks for a log1m axis: 0, 0.5 (where at most 4 decades follow it) and 1 − 10⁻ᵏ (0.9, 0.99,
    …) from the decade of the largest 1 − x to the one below the smallest, at most 1 − 10⁻¹⁵
    (beyond it doubles cannot tell)."""
    gaps = 1 - np.asarray(values, dtype=float)
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    if gaps.size == 0:
        return [0.0, 0.5, 0.9, 0.99]
    deepest = min(15, max(1, math.ceil(-math.log10(gaps.min()))))
    shallowest = max(1, math.floor(-math.log10(gaps.max())))
    middle = [0.5] if deepest - shallowest <= 4 else []  # over more decades 0.5 would crowd 0
    return [0.0, *middle] + [1 - 10.0**-k for k in range(shallowest, deepest + 1)]


def _scale_for_transform(ax: Axes, transform: str | None, values: Sequence[float]) -> None:
    """The axis spaced as the GA searches, labelled with natural values: log for ``log``, the
    logit scale for ``logit`` (when every value is inside (0, 1)), and for ``log1m`` a log scale
    on 1 − x (ticks 0, 0.9, 0.99, …: :func:`decay_ticks`), so β₂ = 0.999 and 0.9999 are a decade
    apart instead of on top of each other; linear for an unknown transform."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if transform == "log" and finite.size and finite.min() > 0:
        ax.set_yscale("log")
    elif transform == "logit" and finite.size and finite.min() > 0 and finite.max() < 1:
        ax.set_yscale("logit")
    elif transform == "log1m":
        floor = 1e-16  # 1 − x below this is 1 in a double anyway

        def forward(x):
            return -np.log10(np.maximum(1 - np.asarray(x, dtype=float), floor))

        def inverse(y):
            return 1 - 10.0 ** -np.asarray(y, dtype=float)

        ax.set_yscale("function", functions=(forward, inverse))
        ax.yaxis.set_major_locator(FixedLocator(decay_ticks(finite)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:.{_decimals(v)}f}"))
        ax.yaxis.set_minor_locator(NullLocator())


def _decimals(tick: float) -> int:
    """The decimals that write 1 − 10⁻ᵏ as 0.99…9 (k nines)."""
    return max(1, round(-math.log10(max(1 - tick, 1e-16))))


def fitness_ceiling(values: Sequence[float]) -> float | None:
    """The top of a log fitness axis: :data:`FITNESS_CEILING_FACTOR` times the 90th percentile of
    the finite fitnesses, or None when no value lies above it (an early generation's one trial at
    1e170 would otherwise squash every other generation into a line)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    ceiling = float(np.percentile(finite, 90)) * FITNESS_CEILING_FACTOR
    return ceiling if finite.max() > ceiling else None


def _draw_fitness(ax: Axes, studies, labels: Sequence[str], colours: Sequence[str]) -> None:
    per_study = [generation_fitness(records) for records in studies]
    width = 0.8 / max(1, len(studies))
    rng = np.random.default_rng(0)  # jitter of the dots only: the same picture every time
    all_finite = [v for fitness in per_study for g in fitness for v in g.finite]
    log = spans_decades(all_finite)
    ceiling = fitness_ceiling(all_finite) if log else None
    above = 0 if ceiling is None else sum(1 for v in all_finite if v > ceiling)
    non_finite = 0
    for k, (fitness, label, colour) in enumerate(zip(per_study, labels, colours, strict=True)):
        offset = (k - (len(studies) - 1) / 2) * width
        drawn = [g for g in fitness if g.finite]
        if drawn:
            positions = [g.generation + offset for g in drawn]
            if ceiling is not None:
                for g, x in zip(drawn, positions, strict=True):
                    high = [v for v in g.finite if v > ceiling]
                    if high:
                        ax.plot([x] * len(high), [ceiling] * len(high), "^", color=colour, markersize=5)
            ax.boxplot(
                [np.minimum(g.finite, ceiling) if ceiling else g.finite for g in drawn],
                positions=positions,
                widths=width * 0.8,
                manage_ticks=False,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": colour, "alpha": 0.3, "edgecolor": colour},
                medianprops={"color": colour},
                whiskerprops={"color": colour},
                capprops={"color": colour},
            )
            for g, x in zip(drawn, positions, strict=True):
                shown = [v for v in g.finite if ceiling is None or v <= ceiling]
                jitter = rng.uniform(-width * 0.3, width * 0.3, len(shown))
                ax.plot(x + jitter, shown, ".", color=colour, markersize=3, alpha=0.7)
        ax.plot([], [], "s", color=colour, alpha=0.5, label=label)
        for g in fitness:
            non_finite += g.non_finite
            if g.non_finite:
                ax.annotate(
                    f"{g.non_finite}✗",
                    (g.generation + offset, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -2),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    color=colour,
                    fontsize="small",
                )
    if log:
        ax.set_yscale("log")
    count = (
        f"{non_finite} non-finite (diverged or raised), counted as n✗ at the top"
        if non_finite
        else "all finite"
    )
    if ceiling is not None:
        ax.set_ylim(top=ceiling * 3)
        count += (
            f",\n{above} above {ceiling:.3g} (×{FITNESS_CEILING_FACTOR:g} the 90th percentile) drawn as ▲"
        )
    ax.set_title(f"fitness per generation: {count}", fontsize="medium")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness: mean loss, last 10% of the trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if not all_finite:
        ax.text(0.5, 0.5, "no finite fitness", transform=ax.transAxes, ha="center", va="center")
    if len(studies) > 1:
        ax.legend(fontsize="small")


def plot_search(
    studies: Sequence[Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    title: str,
    labels: Sequence[str] | None = None,
) -> None:
    """Write :func:`search_figure` to ``path`` (PNG); a single run passes one study."""
    _save(search_figure(studies, title=title, labels=labels), path)


def _save(fig: Figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the Agg canvas, whatever backend pyplot would pick
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def plot_hessian_error(document: Mapping[str, Any], path: Path) -> dict[str, list[float]] | None:
    """LODO's Hessian-approximation error over training (the paper's bowl figure) from an
    evaluation document whose runs sampled it (``metric_trace``): median and interquartile band
    over the seeds, a log x axis (and y where the error spans decades). Returns the plotted series,
    or None when no LODO run sampled it."""
    from matplotlib.figure import Figure

    runs = [r for r in document["optimizers"].get("lodo", {}).get("per_run", []) if r.get("metric_trace")]
    if not runs:
        return None
    length = min(len(r["metric_trace"]) for r in runs)
    evaluations = [t["evaluation"] for t in runs[0]["metric_trace"][:length]]
    errors = np.array([[t["hessian_error"] for t in r["metric_trace"][:length]] for r in runs])
    q25, q50, q75 = np.percentile(errors, [25, 50, 75], axis=0)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(evaluations, q50, label=f"LODO, median of {len(runs)} seeds")
    ax.fill_between(evaluations, q25, q75, alpha=0.25, linewidth=0, label="interquartile range")
    ax.set_xscale("log")
    if spans_decades(errors.ravel()):  # a log axis for less than 1.5 decades only relabels it badly
        ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel("Hessian-approximation error √(mean ‖v + G·Hv‖²)")
    ax.set_title("Noisy quadratic bowl: LODO's approximation of the inverse Hessian")
    ax.legend()
    _save(fig, path)
    return {"evaluations": evaluations, "median": q50.tolist(), "q25": q25.tolist(), "q75": q75.tolist()}


def plot_onepass_pairs(results: Mapping[str, Any], path: Path, *, metric: str) -> int:
    """A one-pass evaluation (:func:`tuner.strategies.onepass.evaluate_onepass`) as pairs: each
    initialisation's final ``metric`` after Random (x) and after one-pass (y), both log axes where
    the values span decades, and the diagonal; a point below it is an initialisation one-pass
    improved. Returns the pairs plotted (both runs finite)."""
    from matplotlib.figure import Figure

    from .strategies.onepass import paired_finals

    shared = list(paired_finals(results, metric).values())
    x = np.array([random for random, _ in shared])
    y = np.array([onepass for _, onepass in shared])
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    if shared:
        ax.scatter(x, y, s=18, alpha=0.8)
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1, label="one-pass = Random")
        if spans_decades(np.concatenate([x, y])):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no initialisation finished both runs", transform=ax.transAxes, ha="center")
    ax.set_xlabel(f"{metric}, Random (the initialisation's values held fixed)")
    ax.set_ylabel(f"{metric}, one-pass")
    below = int((y < x).sum()) if shared else 0
    ax.set_title(
        f"{results['task']}: {len(shared)} initialisations, one-pass lower in {below}", fontsize="medium"
    )
    _save(fig, path)
    return len(shared)
