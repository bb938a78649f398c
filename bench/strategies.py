"""GA vs ASHA vs one-pass on digits-mlp at one wall-clock budget: the comparison the seed papers make.

All three tune the same optimizer, SGD with momentum and coupled weight decay (lr, momentum,
weight decay; the registry's ``sgd``), on ``digits-mlp`` (offline), every run ``--steps`` long:

* **ga** — the LODO paper's GA on ``sgd``, the task's shipped schedule with its step counts
  scaled to ``--steps``, trials on the local Ray (2 at a time);
* **asha** — random search + ASHA on ``sgd`` with the AdamQLR paper's "SGD (Full)" space (plus
  batch size), ``max_t = --steps``, grace period ``--steps``/16, reduction factor 4, on the same
  Ray, stopped by Tune's ``time_budget_s``;
* **onepass** — one-pass implicit-differentiation runs of the same SGD from
  §5.3's random starting values, one after another in this process, until the budget is spent.

Each finished run (GA trial, ASHA trial — completed or stopped early —, one-pass episode) gives the
validation and test loss of the model it trained, at the time it finished (seconds since the
strategy started). A strategy's curve is the best validation loss so far against time, and the
test loss of that same run: what a user who picks by validation would get at that moment.

Caveat: the GA and ASHA each run two trials at a time on two cores; one-pass runs one episode on
the whole machine (a 3,760-parameter MLP does not use two threads), so it uses less of the
budget's CPU. Ray's start (a few seconds) is not counted.

Usage: .venv/bin/python bench/strategies.py [--quick] [--budget-s 120] [--steps 300] [--num-cpus 2]
Writes bench/results/strategies.json and bench/results/strategies.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
import torch
from rich.console import Console
from rich.table import Table

import schedules
from tuner import events as ev
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir
from tuner.runtime import JobContext
from tuner.specs import TuneJob

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RAY_TEMP = ROOT / ".ray" / "bench-strategies"
TASK = "digits-mlp"
OPTIMIZER = "sgd"  # one-pass tunes the same three hyperparameters of the same update


class _BudgetSpent(Exception):
    """Raised from the GA's progress hook once the wall-clock budget is used up."""


def _job(strategy: str, **fields) -> TuneJob:
    return TuneJob(task=TASK, strategy=strategy, evaluate=False, **fields)


def run_ga(budget: float, steps: int, population: int, scratch: Path) -> list[dict]:
    first = schedules.schedule_for(TASK).generations[0].steps
    job = _job(
        "ga", optimizer=OPTIMIZER, step_scale=steps / first, strategy_options={"population": population}
    )
    points: list[dict] = []
    start = time.perf_counter()

    def on_event(event) -> None:
        now = time.perf_counter() - start
        if now > budget:
            raise _BudgetSpent
        if isinstance(event, ev.TrialFinished):
            points.append(_point(now, event.metrics, event.values, event.status != "ok"))

    with contextlib.suppress(_BudgetSpent):
        run_tune_job(job, JobContext(RunDir(scratch / "ga"), emit=on_event))
    return points


def run_asha(budget: float, steps: int, scratch: Path) -> list[dict]:
    options = {
        "num_samples": 100_000,
        "max_t": steps,
        "grace_period": max(1, steps // 16),
        "report_every": max(1, steps // 32),
        "time_budget_s": budget,
    }
    job = _job("asha", optimizer=OPTIMIZER, strategy_options=options)
    points: list[dict] = []
    start = time.perf_counter()
    # trials still pending when the budget ends have no results; Tune warns once per trial
    logging.getLogger("ray.tune").setLevel(logging.ERROR)

    def on_event(event) -> None:
        now = time.perf_counter() - start
        if isinstance(event, ev.TrialFinished) and now <= budget:
            steps_done = event.record["steps"]
            points.append(_point(now, event.metrics, event.values, event.status != "ok", steps_done))

    run_tune_job(job, JobContext(RunDir(scratch / "asha"), emit=on_event))
    return points


def run_onepass(budget: float, steps: int, scratch: Path) -> list[dict]:
    """One-pass jobs from §5.3's random starting values (job seeds 0, 1, …) until the budget ends."""
    points: list[dict] = []
    start = time.perf_counter()
    seed = 0
    while time.perf_counter() - start < budget:
        job = _job("onepass", seed=seed, strategy_options={"steps": steps})
        done = run_tune_job(job, JobContext(RunDir(scratch / f"onepass-{seed}")))["hyperparameters"]
        now = time.perf_counter() - start
        if now <= budget:
            points.append(_point(now, done["metrics"], done["hyperparameters"], done["diverged"]))
        seed += 1
    return points


def _point(t: float, metrics: dict, values: dict, diverged: bool, steps: int | None = None) -> dict:
    def finite(key: str) -> float | None:
        value = metrics.get(key)
        return float(value) if value is not None and math.isfinite(value) and not diverged else None

    return {
        "time_s": round(t, 3),
        "validation_loss": finite("validation_loss"),
        "test_loss": finite("test_loss"),
        "test_accuracy": finite("test_accuracy"),
        "steps": steps,
        "values": {k: float(v) for k, v in values.items()},
    }


def best_so_far(points: list[dict]) -> list[dict]:
    """The running best by validation loss: one entry per improvement."""
    out, best = [], math.inf
    for p in sorted(points, key=lambda p: p["time_s"]):
        if p["validation_loss"] is not None and p["validation_loss"] < best:
            best = p["validation_loss"]
            out.append(p)
    return out


def best_at(curve: list[dict], t: float) -> float | None:
    reached = [p["validation_loss"] for p in curve if p["time_s"] <= t]
    return reached[-1] if reached else None


def plot(curves: dict[str, list[dict]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for name, curve in curves.items():
        if not curve:
            continue
        t = [p["time_s"] for p in curve] + [budget]
        for ax, key in zip(axes, ("validation_loss", "test_loss"), strict=True):
            ax.step(t, [p[key] for p in curve] + [curve[-1][key]], where="post", label=name)
    for ax, label in zip(axes, ("best validation loss so far", "test loss of that run"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("wall-clock time (s)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"{TASK}: GA vs ASHA vs one-pass, {budget:g} s each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="30 s per strategy, 150-step runs, GA population 16"
    )
    parser.add_argument("--budget-s", type=float, default=120.0, help="wall-clock seconds per strategy")
    parser.add_argument("--steps", type=int, default=300, help="training steps of every run")
    parser.add_argument("--population", type=int, default=32, help="GA population")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.budget_s, args.steps, args.population = 30.0, 150, 16
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    RAY_TEMP.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        _temp_dir=tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp"),
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    points: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(dir=RAY_TEMP) as scratch:
        points["ga"] = run_ga(args.budget_s, args.steps, args.population, Path(scratch))
        points["asha"] = run_asha(args.budget_s, args.steps, Path(scratch))
        points["onepass"] = run_onepass(args.budget_s, args.steps, Path(scratch))
    ray.shutdown()

    curves = {name: best_so_far(p) for name, p in points.items()}
    table = Table(
        "strategy",
        "runs",
        "best val loss",
        "its test loss",
        "its test acc",
        "found at (s)",
        f"best val @ {args.budget_s / 4:g} s",
        f"@ {args.budget_s / 2:g} s",
        title=f"{TASK}: {args.budget_s:g} s per strategy, {args.steps}-step runs",
    )
    rows = {}
    for name, curve in curves.items():
        best = curve[-1] if curve else None
        rows[name] = {
            "runs": len(points[name]),
            "best": best,
            "best_at_quarter": best_at(curve, args.budget_s / 4),
            "best_at_half": best_at(curve, args.budget_s / 2),
        }

        def fmt(v, spec=".4g"):
            return "-" if v is None else format(v, spec)

        table.add_row(
            name,
            str(len(points[name])),
            fmt(best and best["validation_loss"]),
            fmt(best and best["test_loss"]),
            fmt(best and best["test_accuracy"], ".3f"),
            fmt(best and best["time_s"], ".1f"),
            fmt(rows[name]["best_at_quarter"]),
            fmt(rows[name]["best_at_half"]),
        )
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "task": TASK,
        "budget_s": args.budget_s,
        "steps": args.steps,
        "population": args.population,
        "num_cpus": args.num_cpus,
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "load_average": os.getloadavg()[0],
        "summary": rows,
        "curves": curves,
        "points": points,
    }
    (args.out / "strategies.json").write_text(json.dumps(document, indent=2))
    plot(curves, args.budget_s, args.out / "strategies.png")
    print(f"wrote {args.out / 'strategies.json'} and {args.out / 'strategies.png'}")


if __name__ == "__main__":
    main()
