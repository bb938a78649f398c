"""Cost of one optimizer iteration relative to Adam, on the AdamQLR MLP and the LODO autoregression CNN.

One iteration is what ``tuner.trial.run_trial`` does for the optimizer's evaluation mode:

* ``adam``, ``lodo`` (gradient): ``task.train_loss()`` + ``backward()`` + ``step()``: 1 loss evaluation;
* ``adamqlr`` (same-batch-outputs): ``next_output_batch()`` + ``step(closure, batch=...)``: the loss
  with its gradient, one ``torch.func.jvp`` of the outputs (Fisher curvature), and the loss again
  on the same batch after the step: 2 loss evaluations (≈ 2 forwards + 1 backward + 1 jvp);
* ``sfn-series K=5`` / ``K=20`` (same-batch-loss, a = 1): the loss with a double-backward-able
  gradient, 2(K − 1) Hessian-vector products by double backward, and the loss again: 2 loss
  evaluations + 8 or 38 HVPs.

The ratio column is the median iteration time over Adam's (the registry's Keras-ε Adam), measured
in the same run on the same task instance settings. The first iteration (warm-up: LODO's caches,
torch's forward-AD decompositions) is timed separately and left out of the median.

Tasks: ``fashion-mnist-mlp`` (784-50-10) at its dataset batch 50 and at 3200 (the batch of
"AdamQLR (Untuned)"); ``mnist-autoregression`` (the 94,696-parameter CNN) at batch 256 (32 with
``--quick``). Data: the real IDX files under $LODOTUNE_DATA_DIR (default ./data) when present,
else random images of the real shape written as IDX (the cost of a step does not depend on the
pixel values).

Contention: as ``bench/task_steps.py`` (whose helpers this uses): each optimizer first waits (up to
20 s) for quiet CPUs, and iterations during which other processes used ≥ 15 % of the CPUs are
discarded when enough quiet ones remain; the ``quiet/all`` column says how many the median is over.

Usage: .venv/bin/python bench/optimizers.py [--quick] [--device cpu|cuda] [--threads N]
Writes bench/results/optimizers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from task_steps import QUIET, cpu_snapshot, data_for, others_share, synchronize, wait_quiet

import lodo
import tasks

RESULTS = Path(__file__).resolve().parent / "results" / "optimizers.json"
# (row label, registry name, hyperparameters)
OPTIMIZERS = (
    ("adam", "adam", {}),
    ("lodo", "lodo", {}),
    ("adamqlr", "adamqlr", {}),
    ("sfn-series K=5", "sfn-series", {"terms": 5, "acceleration_order": 1}),
    ("sfn-series K=20", "sfn-series", {"terms": 20, "acceleration_order": 1}),
)
WORK = {
    "adam": "1 fwd+bwd",
    "lodo": "1 fwd+bwd + LODO update",
    "adamqlr": "fwd+bwd, jvp, fwd",
    "sfn-series K=5": "fwd+bwd(graph), 8 HVP, fwd",
    "sfn-series K=20": "fwd+bwd(graph), 38 HVP, fwd",
}


def iteration_function(task, name: str, values: dict) -> Callable[[], None]:
    """One iteration of ``name`` on ``task`` as the trial runner performs it."""
    spec = lodo.get(name)
    options = {"seed": 0} if lodo.get(name).seeded else {}
    optimizer = spec.build(task.parameters(), values, **options)
    if spec.evaluation == "gradient":

        def iterate() -> None:
            optimizer.zero_grad()
            loss = task.train_loss()
            loss.backward()
            float(loss.detach())  # the trial runner records every loss
            optimizer.step()

    elif spec.evaluation == "same-batch-outputs":

        def iterate() -> None:
            batch = task.next_output_batch()
            optimizer.step(batch.evaluate, batch=batch)

    elif spec.evaluation == "same-batch-loss":

        def iterate() -> None:
            optimizer.step(task.next_output_batch().evaluate)

    else:
        raise ValueError(f"Invalid optimizer: {name} (allowed: one whose evaluation mode this bench times)")
    return iterate


def time_iterations(
    iterate: Callable[[], None], device: torch.device, *, budget_s: float, min_steps: int
) -> dict:
    """The first iteration on its own, then iterations until ``budget_s`` of quiet ones (or 4 budgets)."""

    def once() -> tuple[float, float | None]:
        synchronize(device)
        before, start = cpu_snapshot(), time.perf_counter()
        iterate()
        synchronize(device)
        seconds = time.perf_counter() - start
        return seconds, others_share(before, cpu_snapshot(), seconds)

    first, _ = once()
    deadline = time.perf_counter() + 4 * budget_s
    quiet: list[float] = []
    noisy: list[float] = []
    while time.perf_counter() < deadline:
        seconds, others = once()
        (noisy if others is not None and others >= QUIET else quiet).append(seconds)
        if len(quiet) >= min_steps and sum(quiet) >= budget_s:
            break
    if len(quiet) + len(noisy) < min_steps:  # one iteration outlasted the cap: take the minimum
        while len(quiet) + len(noisy) < min_steps:
            seconds, others = once()
            (noisy if others is not None and others >= QUIET else quiet).append(seconds)
    samples = quiet if len(quiet) >= min_steps else quiet + noisy
    return {
        "first_s": first,
        "median_s": statistics.median(samples),
        "quiet": len(quiet),
        "all": len(quiet) + len(noisy),
    }


def render(rows: list[dict], device: torch.device) -> Table:
    table = Table(
        title=f"Optimizer iteration cost vs Adam on {device} ({torch.get_num_threads()} threads; medians)"
    )
    for column in (
        "task",
        "batch",
        "optimizer",
        "work per iteration",
        "ms/iter",
        "×Adam",
        "1st iter s",
        "quiet/all",
    ):
        table.add_column(
            column, justify="left" if column in ("task", "optimizer", "work per iteration") else "right"
        )
    for row in rows:
        table.add_row(
            row["task"],
            str(row["batch"]),
            row["optimizer"],
            WORK[row["optimizer"]],
            f"{row['ms_per_iteration']:.2f}",
            f"{row['ratio_vs_adam']:.1f}",
            f"{row['first_iteration_s']:.2f}",
            f"{row['quiet']}/{row['all']}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="1.5 s per optimizer, CNN batch 32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    console = Console(width=150)
    budget = 1.5 if args.quick else 6.0
    configurations = (
        ("fashion-mnist-mlp", 50),
        ("fashion-mnist-mlp", 3200),
        ("mnist-autoregression", 32 if args.quick else 256),
    )
    real_dir = Path(os.environ.get("LODOTUNE_DATA_DIR") or "data").resolve()
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    data: dict[str, str] = {}
    data_dirs: dict[str, Path] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lodotune-bench-") as generated:
        for name, batch_size in configurations:
            if name not in data:
                data_dirs[name], data[name] = data_for(name, real_dir, Path(generated), rng)
            options = {"batch_size": batch_size, "data_dir": data_dirs[name]}
            if name == "mnist-autoregression":
                options["metric_images"] = 1
            heavy = name == "mnist-autoregression" and device.type == "cpu"
            adam_s = None
            for label, optimizer, values in OPTIMIZERS:
                wait_quiet(20.0)
                task = tasks.build(name, seed=0, device=device, **options)
                timing = time_iterations(
                    iteration_function(task, optimizer, values),
                    device,
                    budget_s=budget,
                    min_steps=2 if heavy else 5,
                )
                adam_s = adam_s or timing["median_s"]
                rows.append(
                    {
                        "task": name,
                        "batch": batch_size,
                        "optimizer": label,
                        "registry_name": optimizer,
                        "hyperparameters": values,
                        "ms_per_iteration": 1e3 * timing["median_s"],
                        "ratio_vs_adam": timing["median_s"] / adam_s,
                        "first_iteration_s": timing["first_s"],
                        "quiet": timing["quiet"],
                        "all": timing["all"],
                    }
                )
                console.print(f"  {name} b={batch_size} {label}: {1e3 * timing['median_s']:.2f} ms/iteration")
                del task
    elapsed = time.perf_counter() - started
    console.print(render(rows, device))
    for name, description in data.items():
        console.print(f"{name}: data {description}")
    console.print(f"total {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": str(device),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "baseline": "adam (registry record, Keras ε) on the same task and batch = 1.0",
        "data": data,
        "rows": rows,
        "elapsed_s": elapsed,
    }
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
