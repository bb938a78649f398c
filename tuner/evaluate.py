"""Final evaluation: N seeds of each optimizer at the task's final length (lodo.md §3.6).

Per optimizer: mean ± population std (ddof 0) of the window loss (evaluations strictly inside
(0.9M, M)) over the runs that did not diverge, the diverged count, steps/s and the mean of the
task metrics. Writes ``results.json``, ``results.md``, ``curves.npz`` (every run's full loss
curve) and ``curves.png`` (median and interquartile band per optimizer, log-scale loss).
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import ga
from .rundir import write_json
from .summary import summarize, window_mean
from .trial import TrialResult, TrialSpec

CURVE_POINTS = 2000  # results.json keeps curves averaged down to at most this many points


def _downsample(losses: list[float]) -> list[float | None]:
    values = np.asarray(losses, dtype=float)
    if len(values) > CURVE_POINTS:
        edges = np.linspace(0, len(values), CURVE_POINTS + 1).astype(int)
        values = np.array([values[a:b].mean() for a, b in itertools.pairwise(edges)])
    return [float(v) if math.isfinite(v) else None for v in values]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate(
    task: str,
    entries: Mapping[str, Mapping[str, float]],
    *,
    steps: int,
    seeds: int,
    executor,
    out_dir: Path,
    job_seed: int = 0,
    task_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    step_scale: float = 1.0,
    sources: Mapping[str, str] | None = None,
    progress=None,
) -> dict[str, Any]:
    """Run every optimizer in ``entries`` (name → hyperparameters) for ``seeds`` runs."""
    if seeds < 1:
        raise ValueError(f"Invalid seeds: {seeds} (allowed: an integer >= 1)")
    run_seeds = [ga.evaluation_seed(job_seed, r) for r in range(seeds)]
    specs = [
        TrialSpec(
            task,
            name,
            dict(values),
            seed=s,
            steps=steps,
            task_options=dict(task_options or {}),
            device=device,
        )
        for name, values in entries.items()
        for s in run_seeds
    ]
    results = executor.map(specs, progress)
    by_optimizer: dict[str, list[TrialResult]] = {name: [] for name in entries}
    for spec, res in zip(specs, results, strict=True):
        by_optimizer[spec.optimizer].append(res)

    low, high = math.floor(0.9 * steps) + 1, steps - 1
    document: dict[str, Any] = {
        "task": task,
        "steps": steps,
        "step_scale": step_scale,
        "window": [low, high],
        "seeds": run_seeds,
        "job_seed": job_seed,
        "optimizers": {},
    }
    for name, runs in by_optimizer.items():
        summary = summarize(name, runs, steps)
        metric_names = sorted({k for r in runs for k in r.metrics})
        document["optimizers"][name] = {
            "hyperparameters": dict(entries[name]),
            "source": (sources or {}).get(name, "given"),
            "mean": _finite_or_none(summary.mean),
            "std": _finite_or_none(summary.std),
            "diverged": summary.diverged,
            "runs": summary.runs,
            "steps_per_second": summary.steps_per_second,
            "metrics": {
                k: statistics.fmean([r.metrics[k] for r in runs if k in r.metrics]) for k in metric_names
            },
            "per_run": [
                {
                    "seed": r.spec.seed,
                    "window_mean": _finite_or_none(window_mean(r.losses, steps)),
                    "diverged": r.diverged,
                    "error": r.error,
                    "metrics": r.metrics,
                    "curve": _downsample(r.losses),
                }
                for r in runs
            ],
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", document)
    (out_dir / "results.md").write_text(markdown_table(document))
    np.savez_compressed(
        out_dir / "curves.npz",
        **{
            f"{name}__{r.spec.seed}": np.asarray(r.losses)
            for name, runs in by_optimizer.items()
            for r in runs
        },
    )
    plot_curves(by_optimizer, out_dir / "curves.png", title=f"{task}: {seeds} seeds")
    return document


def markdown_table(document: Mapping[str, Any]) -> str:
    low, high = document["window"]
    lines = [
        f"# {document['task']}: {len(document['seeds'])} seeds × {document['steps']} evaluations"
        + (f" (step scale {document['step_scale']})" if document["step_scale"] != 1 else ""),
        "",
        f"| optimizer | loss, evals {low}–{high} (mean ± std) | diverged | steps/s | hyperparameters |",
        "|---|---|---|---|---|",
    ]
    for name, entry in document["optimizers"].items():
        loss = "diverged" if entry["mean"] is None else f"{entry['mean']:.6g} ± {entry['std']:.2g}"
        hps = ", ".join(f"{k}={v:.4g}" for k, v in entry["hyperparameters"].items())
        diverged, rate = f"{entry['diverged']}/{entry['runs']}", f"{entry['steps_per_second']:,.0f}"
        lines.append(f"| {name} | {loss} | {diverged} | {rate} | {hps} |")
    return "\n".join(lines) + "\n"


def plot_curves(by_optimizer: Mapping[str, list[TrialResult]], path: Path, *, title: str) -> None:
    """Median and interquartile band of the loss per evaluation, log-scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    starts, lows = [], []
    for name, runs in by_optimizer.items():
        length = max(len(r.losses) for r in runs)
        curves = np.full((len(runs), length), np.nan)
        for i, r in enumerate(runs):
            curves[i, : len(r.losses)] = r.losses
        curves[~np.isfinite(curves) | (curves <= 0)] = np.nan
        with warnings.catch_warnings():  # evaluations after every run diverged are all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            q25, q50, q75 = np.nanpercentile(curves, [25, 50, 75], axis=0)
        starts.extend(curves[:, 0][np.isfinite(curves[:, 0])])
        lows.extend(q25[np.isfinite(q25)])
        diverged = sum(r.diverged for r in runs)
        label = name + (f" ({diverged}/{len(runs)} diverged)" if diverged else "")
        x = np.arange(1, length + 1)
        (line,) = ax.plot(x, q50, label=label, linewidth=1.2)
        ax.fill_between(x, q25, q75, color=line.get_color(), alpha=0.25, linewidth=0)
    if starts and lows:  # diverging runs would squash everything else: keep them above the frame
        ax.set_ylim(min(lows) / 2, max(starts) * 10)
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel("training loss (median, IQR band)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
