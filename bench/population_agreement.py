"""Vectorized members against their solo runs over many evaluations, every supported pair, float64.

The tests (tests/tuner/test_population.py) hold every supported (task, optimizer) pair to 1e-9
relative at small step counts. This runs each pair for ``--steps`` evaluations (default 50, the
bar the vectorized path is held to) with ``--members`` members spread as a GA generation spreads
them (bench/ga_generation.py), every task built in float64, and reports per pair: the largest
relative difference of any member's loss from its solo run over the first 50 evaluations and over
all of them, the first evaluation past 1e-9 (none if never), and whether every member diverged
(or not) where its solo run did. Data: generated files of the real shape (bench/task_steps.py);
the data tasks at ``--batch-size`` (default 8: the sizes do not change the sequences, only the
time); the 28×28 CNN's final metric is left out (only losses are compared). ``--skip
TASK:OPTIMIZER`` leaves pairs out (the table lists them as skipped).

Usage: .venv/bin/python bench/population_agreement.py [--steps 50] [--members 2]
       [--only TASK:OPTIMIZER ...] [--skip TASK:OPTIMIZER ...]
       writes bench/results/population_agreement.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ga_generation import DATA_TASKS, generation  # bench/ is on sys.path when this file runs
from rich.console import Console
from rich.table import Table
from task_steps import data_for

import lodo.population as optimizer_populations
import tasks
import tasks.population as task_populations
from tuner.population import run_population
from tuner.trial import run_trial

RESULTS = Path(__file__).resolve().parent / "results" / "population_agreement.json"
RTOL = 1e-9
FIRST = 50
# Options that keep the instances small (the sequences are what is compared, not the sizes).
SMALL = {
    "noisy-quadratic-bowl": {"n": 12},
    "digits-autoregression": {"metric_images": 1},
    "mnist-autoregression": {"metric_images": 1},
}
ANALYTIC = ("rosenbrock", "rosenbrock-classic", "noisy-quadratic-bowl")  # no minibatches


def relative(a: float, b: float) -> float:
    if not math.isfinite(b):
        return 0.0 if not math.isfinite(a) else math.inf
    return abs(a - b) / max(abs(b), 1e-300)


def compare(task: str, optimizer: str, members: int, steps: int, options: dict) -> dict:
    specs = generation(task, optimizer, members, steps, options, "cpu", seed=11)
    start = time.perf_counter()
    vectorized = run_population(specs)
    alone = [run_trial(spec) for spec in specs]
    wall = time.perf_counter() - start
    first_50, overall, first_past, same_status = 0.0, 0.0, None, True
    for v, a in zip(vectorized, alone, strict=True):
        same_status &= v.status == a.status and len(v.losses) == len(a.losses)
        for k, (x, y) in enumerate(zip(v.losses, a.losses, strict=False)):
            diff = relative(x, y)
            overall = max(overall, diff)
            if k < FIRST:
                first_50 = max(first_50, diff)
            if diff > RTOL and (first_past is None or k < first_past):
                first_past = k
    return {
        "task": task,
        "optimizer": optimizer,
        "members": members,
        "steps": steps,
        "evaluations": [len(a.losses) for a in alone],
        "diverged": [a.diverged for a in alone],
        "same_status": same_status,
        "max_rel_diff_first_50": first_50,
        "max_rel_diff": overall,
        "first_evaluation_past_rtol": first_past,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=FIRST)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", nargs="+", default=None, help="TASK:OPTIMIZER pairs to run")
    parser.add_argument("--skip", nargs="+", default=[], help="TASK:OPTIMIZER pairs to leave out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    build = tasks.build
    tasks.build = lambda name, **kw: build(name, **{**kw, "dtype": torch.float64})
    # Only losses are compared: the 28×28 CNN's final metric (784 forward passes per generated
    # image, ~40 s a run in float64) is left out of both paths.
    from tasks.autoregression import AutoregressionTask

    metrics = AutoregressionTask.metrics
    AutoregressionTask.metrics = lambda self, **kw: {} if self.size == 28 else metrics(self, **kw)
    pairs = [(t, o) for t in task_populations.SUPPORTED for o in optimizer_populations.SUPPORTED]
    if args.only:
        pairs = [p for p in pairs if ":".join(p) in args.only]
    console = Console(width=max(140, Console().width))
    rows = []
    with tempfile.TemporaryDirectory() as generated:
        for task, optimizer in pairs:
            if f"{task}:{optimizer}" in args.skip:
                rows.append({"task": task, "optimizer": optimizer, "skipped": True})
                continue
            options = dict(SMALL.get(task, {}))
            if task not in ANALYTIC:
                options.setdefault("batch_size", args.batch_size)
            if task in DATA_TASKS:
                directory, _ = data_for(task, Path("data"), Path(generated), np.random.default_rng(0))
                options["data_dir"] = str(directory)
            console.print(f"{task} {optimizer}: {args.members} members × {args.steps} evaluations ...")
            rows.append(compare(task, optimizer, args.members, args.steps, options))
            write(rows, args.steps)  # after every pair: a long run interrupted keeps what it measured
    table = Table(
        "task", "optimizer", "evaluations", "diverged", "status same", f"max rel diff (first {FIRST})",
        "max rel diff (all)", f"first past {RTOL:g}", "wall s",
        title="vectorized vs solo runs, float64", caption=f"members per pair: {args.members}",
    )  # fmt: skip
    for r in rows:
        if r.get("skipped"):
            table.add_row(r["task"], r["optimizer"], "skipped", *[""] * 6)
            continue
        past = r["first_evaluation_past_rtol"]
        table.add_row(
            r["task"], r["optimizer"], "/".join(map(str, r["evaluations"])), f"{sum(r['diverged'])}",
            "yes" if r["same_status"] else "NO", f"{r['max_rel_diff_first_50']:.1e}",
            f"{r['max_rel_diff']:.1e}", "never" if past is None else str(past), f"{r['wall_s']:.1f}",
        )  # fmt: skip
    console.print(table)
    write(rows, args.steps)
    console.print(f"wrote {RESULTS}")


def write(rows: list[dict], steps: int) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rtol": RTOL, "steps": steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
