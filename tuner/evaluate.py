"""Final evaluation: N seeds of each optimizer at the task's final length (lodo.md §3.6).

Per optimizer: mean ± population std (ddof 0) of the window loss (evaluations strictly inside
(0.9M, M), or the last one where that is empty: :func:`tuner.summary.window`) over the runs with
status ok, the diverged and error counts (a run that raised is an error, never a divergence),
steps/s and the mean of the task metrics. Writes ``results.json``, ``results.md``, ``curves.npz``
(every run's full loss curve) and ``curves.png`` (median and interquartile band per optimizer,
log-scale loss).

Each finished run is also kept in ``runs/`` as it finishes (:class:`RunStore`), so an evaluation
that is killed and started again runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import ga, plots
from ._validation import invalid
from .rundir import read_json, write_array, write_json
from .summary import PAPER_RULE, summarize, window, window_mean
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
        # status is derived from the other fields (and absent from runs kept before it existed)
        fields = {k: v for k, v in meta["result"].items() if k != "status"}
        return TrialResult(spec=spec, losses=losses, **fields)

    def save(self, result: TrialResult) -> None:
        if result.status == "error":
            return
        meta_path, curve_path = self._paths(result.spec)
        write_array(curve_path, np.asarray(result.losses, dtype=float))
        fields = {k: v for k, v in result.to_dict().items() if k not in ("spec", "losses")}
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


def _value_sources(
    entries: Mapping[str, Mapping[str, float]],
    sources: Mapping[str, str],
    value_sources: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    """Where each value came from, per optimizer: as given, else the optimizer's source."""
    for name, by_value in value_sources.items():
        if name not in entries:
            raise invalid("value_sources optimizer", name, ", ".join(entries))
        for key in by_value:
            if key not in entries[name]:
                raise invalid(f"value_sources hyperparameter of {name}", key, ", ".join(entries[name]))
    return {
        name: {key: value_sources.get(name, {}).get(key, sources[name]) for key in values}
        for name, values in entries.items()
    }


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
    value_sources: Mapping[str, Mapping[str, str]] | None = None,
    optimizer_options: Mapping[str, Mapping[str, str]] | None = None,
    metric_every: int | None = None,
    entry_steps: Mapping[str, int] | None = None,
    entry_task_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every optimizer in ``entries`` (name → hyperparameters) for ``seeds`` runs; runs already
    kept in ``out_dir/runs`` for the same spec are reused, not run again. ``metric_every``: every
    run also samples the task metrics during training (each run's ``metric_trace``).

    ``sources`` says where an optimizer's values came from ("given" by default);
    ``value_sources`` (optimizer → hyperparameter → source, e.g. "paper Table 6 (halved)") where
    one value came from elsewhere than the rest; ``optimizer_options`` (optimizer → registry
    options, e.g. LODO's ``{"meta_dtype": "float32"}``) how each is built. ``entry_steps`` and
    ``entry_task_options`` give an optimizer its own length and task options (an ASHA job's
    optimizers, each at its tuned batch size for the same budget); each optimizer's entry says
    which it ran with.
    """
    if seeds < 1:
        raise ValueError(f"Invalid seeds: {seeds} (allowed: an integer >= 1)")
    scored = window(steps)
    steps_of = {name: (entry_steps or {}).get(name, steps) for name in entries}
    options_of = {name: dict((entry_task_options or {}).get(name, task_options or {})) for name in entries}
    row_sources = {name: (sources or {}).get(name, "given") for name in entries}
    per_value_sources = _value_sources(entries, row_sources, value_sources or {})
    run_seeds = [ga.evaluation_seed(job_seed, r) for r in range(seeds)]
    specs = [
        TrialSpec(
            task,
            name,
            dict(values),
            seed=s,
            steps=steps_of[name],
            task_options=options_of[name],
            device=device,
            optimizer_options=dict((optimizer_options or {}).get(name, {})),
            metric_every=metric_every,
        )
        for name, values in entries.items()
        for s in run_seeds
    ]
    results, reused = _map_missing(executor, specs, RunStore(out_dir / "runs"), progress)
    by_optimizer: dict[str, list[TrialResult]] = {name: [] for name in entries}
    for spec, res in zip(specs, results, strict=True):
        by_optimizer[spec.optimizer].append(res)

    document: dict[str, Any] = {
        "task": task,
        "steps": steps,
        "step_scale": step_scale,
        "window": [scored.first, scored.last],
        "window_rule": scored.rule,
        "seeds": run_seeds,
        "job_seed": job_seed,
        "task_options": dict(task_options or {}),
        "reused_runs": reused,  # finished before a restart, read back from out_dir/runs
        "optimizers": {},
    }
    for name, runs in by_optimizer.items():
        summary = summarize(name, runs, steps_of[name])
        scored_here = window(steps_of[name])
        metric_names = sorted({k for r in runs for k in r.metrics})
        document["optimizers"][name] = {
            "hyperparameters": dict(entries[name]),
            "source": row_sources[name],
            "value_sources": per_value_sources[name],
            "optimizer_options": dict((optimizer_options or {}).get(name, {})),
            "steps": steps_of[name],
            "window": [scored_here.first, scored_here.last],
            "task_options": options_of[name],
            "mean": _finite_or_none(summary.mean),
            "std": _finite_or_none(summary.std),
            "diverged": summary.diverged,
            "errors": summary.errors,
            "error": next((r.error for r in runs if r.error is not None), None),  # the first, in seed order
            "runs": summary.runs,
            # per run (a vectorized run's share of its shard's time); None: no run made a step
            "steps_per_second": _finite_or_none(summary.steps_per_second),
            "metrics": {
                k: statistics.fmean([r.metrics[k] for r in runs if k in r.metrics]) for k in metric_names
            },
            "per_run": [
                {
                    "seed": r.spec.seed,
                    "window_mean": _finite_or_none(window_mean(r.losses, steps_of[name])),
                    "status": r.status,
                    "diverged": r.diverged,
                    "error": r.error,
                    "metrics": r.metrics,
                    "execution": r.execution,  # vectorized (members of the shard) or alone, and why
                    "curve": _downsample(r.losses),
                    **({"metric_trace": r.metric_trace} if metric_every else {}),
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
    plots.plot_curves(by_optimizer, out_dir / "curves.png", title=f"{task}: {seeds} seeds")
    return document


def own_settings(document: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[str, str]:
    """What one optimizer ran with that the document's header does not say: its own scored
    window (``" (evals a–b)"``) and task options (``"batch_size=400"``), empty where it has none."""
    window_note = ""
    if entry.get("window", document["window"]) != document["window"]:
        window_note = f" (evals {entry['window'][0]}–{entry['window'][1]})"
    own = entry.get("task_options", document["task_options"])
    options = ", ".join(f"{k}={v}" for k, v in own.items() if document["task_options"].get(k) != v)
    return window_note, options


def markdown_table(document: Mapping[str, Any]) -> str:
    low, high = document["window"]
    lines = [
        f"# {document['task']}: {len(document['seeds'])} seeds × {document['steps']} evaluations"
        + (f" (step scale {document['step_scale']})" if document["step_scale"] != 1 else ""),
        "",
    ]
    if document["window_rule"] != PAPER_RULE:
        lines += [f"Window: {document['window_rule']}.", ""]
    lines += [
        f"| optimizer | loss, evals {low}–{high} (mean ± std) | diverged | errors | steps/s | source "
        "| hyperparameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in document["optimizers"].items():
        runs = entry["runs"]
        if entry["mean"] is not None:
            loss = f"{entry['mean']:.6g} ± {entry['std']:.2g}"
        else:  # no run finished ok with a finite window
            loss = "diverged" if entry["diverged"] else "error"
        window_note, options = own_settings(document, entry)
        # a value's own source is shown only where it is not the row's
        hps = ", ".join(
            [
                f"{k}={v:.4g}"
                + (f" ({entry['value_sources'][k]})" if entry["value_sources"][k] != entry["source"] else "")
                for k, v in entry["hyperparameters"].items()
            ]
            + ([options] if options else [])
        )
        loss += window_note
        rate = "–" if entry["steps_per_second"] is None else f"{entry['steps_per_second']:,.0f}"
        lines.append(
            f"| {name} | {loss} | {entry['diverged']}/{runs} | {entry['errors']}/{runs} | {rate} "
            f"| {entry['source']} | {hps} |"
        )
    if any(entry["error"] is not None for entry in document["optimizers"].values()):
        lines += ["", "First error per optimizer:", ""]
        lines += [
            f"* {name}: {entry['error']}"
            for name, entry in document["optimizers"].items()
            if entry["error"] is not None
        ]
    return "\n".join(lines) + "\n"
