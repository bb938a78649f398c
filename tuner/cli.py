"""The ``lodotune`` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import lodo
import tasks as task_registry
from schedules import paper_values

from .evaluation import summarize
from .trial import TrialSpec, run_trial

app = typer.Typer(help="Tune and compare optimizers with the LODO paper's protocol.", no_args_is_help=True)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


@app.command()
def optimizers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the optimizers and their hyperparameters (name, default, kind)."""
    records = lodo.describe()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table("name", "hyperparameters (default, kind)", "evaluation", "summary")
    for r in records:
        hps = ", ".join(f"{h['name']}={h['default']:g} ({h['kind']})" for h in r["hyperparameters"])
        table.add_row(r["name"], hps or "-", r["evaluation"], r["summary"])
    console.print(table)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the tasks with their parameter counts and options."""
    records = task_registry.describe()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table("name", "parameters", "dtype", "options", "description")
    for r in records:
        opts = ", ".join(f"{o['name']}={o['default']}" for o in r["options"])
        table.add_row(r["name"], f"{r['num_parameters']:,}", r["dtype"], opts or "-", r["description"])
    console.print(table)


def _values_for(task: str, optimizer: str, source: str) -> dict[str, float]:
    if source == "defaults":
        return lodo.get(optimizer).defaults
    try:
        return paper_values(task, optimizer)
    except ValueError as err:
        _fail(f"{err}; use --values defaults")
    raise AssertionError  # unreachable: _fail exits


@app.command()
def compare(
    task: Annotated[str, typer.Argument(help="Task name (see `lodotune tasks`).")],
    optimizer_names: Annotated[list[str], typer.Argument(metavar="OPTIMIZER...", help="Optimizer names.")],
    seeds: Annotated[int, typer.Option(min=1, help="Runs per optimizer (seeds 0..N-1).")] = 8,
    steps: Annotated[int, typer.Option(min=2, help="Loss evaluations per run (M).")] = 200,
    values: Annotated[str, typer.Option(help="Hyperparameters: 'paper' (Table 6) or 'defaults'.")] = "paper",
    out: Annotated[Path | None, typer.Option(help="Write results.json here.")] = None,
) -> None:
    """Run optimizers over several seeds and report the paper's window loss (mean over (0.9M, M))."""
    if task not in task_registry.TASK_NAMES:
        _fail(f"Unknown task {task!r} (allowed: {' | '.join(task_registry.TASK_NAMES)})")
    if values not in ("paper", "defaults"):
        _fail(f"Invalid values: {values!r} (allowed: paper | defaults)")
    for name in optimizer_names:
        if name not in lodo.OPTIMIZERS:
            _fail(f"Unknown optimizer {name!r} (allowed: {' | '.join(lodo.OPTIMIZERS)})")
    chosen = {name: _values_for(task, name, values) for name in optimizer_names}
    summaries, runs = [], {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for name, hps in chosen.items():
            bar = progress.add_task(f"{name} on {task}", total=seeds)
            results = []
            for seed in range(seeds):
                results.append(run_trial(TrialSpec(task, name, hps, seed=seed, steps=steps)))
                progress.advance(bar)
            summaries.append(summarize(name, results, steps))
            runs[name] = [r.to_dict() for r in results]
    low, high = math.floor(0.9 * steps) + 1, steps - 1
    table = Table(
        "optimizer",
        f"loss, evals {low}–{high} (mean ± std)",
        "diverged",
        "steps/s",
        "hyperparameters",
        title=f"{task}: {seeds} seeds × {steps} evaluations ({values} values)",
    )
    for s in summaries:
        hps = ", ".join(f"{k}={v:.4g}" for k, v in chosen[s.optimizer].items())
        table.add_row(
            s.optimizer,
            f"{s.mean:.6g} ± {s.std:.2g}",
            f"{s.diverged}/{s.runs}",
            f"{s.steps_per_second:,.0f}",
            hps,
        )
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        document = {
            "task": task,
            "steps": steps,
            "seeds": seeds,
            "values": values,
            "window": [low, high],
            "summaries": [s.__dict__ for s in summaries],
            "runs": runs,
        }
        (out / "results.json").write_text(json.dumps(document, indent=2))
        console.print(f"wrote {out / 'results.json'}")
