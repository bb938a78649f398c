"""Final evaluation: N seeds of each optimizer at the task's final length (lodo.md §3.6).

Per optimizer: mean ± population std (ddof 0) of the window loss (evaluations strictly inside
(0.9M, M)) over the runs that did not diverge, the diverged count, steps/s and the mean of the
task metrics. Writes ``results.json``, ``results.md``, ``curves.npz`` (every run's full loss
curve) and ``curves.png`` (median and interquartile band per optimizer, log-scale loss).

Each finished run is also kept in ``runs/`` as it finishes (:class:`RunStore`), so an evaluation
that is killed and started again runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import ga
from .rundir import read_json, write_array, write_json
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


class RunStore:
    """The finished runs of one evaluation: ``runs/<optimizer>__<seed>.json`` (the spec and the
    result without its curve) beside ``.npy`` (the full loss curve).

    The curve is written first and the JSON last, each atomically, so a run counts as finished
    exactly when its JSON exists and names the same spec. Runs that failed with an error (a lost
    worker, say) are not kept: they are run again.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, spec: TrialSpec) -> tuple[Path, Path]:
        stem = self.directory / f"{spec.optimizer}__{spec.seed}"
        return stem.with_suffix(".json"), stem.with_suffix(".npy")

    @staticmethod
    def _key(spec: TrialSpec) -> str:
        return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)

    def load(self, spec: TrialSpec) -> TrialResult | None:
        meta_path, curve_path = self._paths(spec)
        try:
            meta = read_json(meta_path)
            if meta["spec"] != self._key(spec):
                return None  # another evaluation's run (other hyperparameters or steps)
            losses = np.load(curve_path).tolist()
        except (OSError, ValueError, KeyError):
            return None
        return TrialResult(spec=spec, losses=losses, **meta["result"])

    def save(self, result: TrialResult) -> None:
        if result.error is not None:
            return
        meta_path, curve_path = self._paths(result.spec)
        write_array(curve_path, np.asarray(result.losses, dtype=float))
        fields = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("spec", "losses")}
        write_json(meta_path, {"spec": self._key(result.spec), "result": fields})


def _map_missing(executor, specs: list[TrialSpec], runs: RunStore, progress) -> tuple[list[TrialResult], int]:
    """Every spec's result: the kept ones as they are, the others run now and kept as they finish;
    and how many were kept."""
    results: list[TrialResult | None] = [runs.load(spec) for spec in specs]
    missing = [i for i, result in enumerate(results) if result is None]
    if progress is not None:
        for index, result in enumerate(results):
            if result is not None:
                progress(index, result)

    def on_finished(position: int, result: TrialResult) -> None:
        runs.save(result)
        if progress is not None:
            progress(missing[position], result)

    for position, result in enumerate(executor.map([specs[i] for i in missing], on_finished)):
        results[missing[position]] = result
    return results, len(specs) - len(missing)  # type: ignore[return-value]


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
    """Run every optimizer in ``entries`` (name → hyperparameters) for ``seeds`` runs; runs already
    kept in ``out_dir/runs`` for the same spec are reused, not run again."""
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
    results, reused = _map_missing(executor, specs, RunStore(out_dir / "runs"), progress)
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
        "reused_runs": reused,  # finished before a restart, read back from out_dir/runs
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
