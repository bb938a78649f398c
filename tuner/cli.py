"""The ``lodotune`` command line (typer + rich)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import lodo
import schedules
import tasks as task_registry

from .evaluate import evaluate as run_evaluation
from .rundir import RunDir, read_json
from .tuning import TuneConfig
from .tuning import tune as run_tuning

app = typer.Typer(help="Tune and compare optimizers with the LODO paper's protocol.", no_args_is_help=True)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


def _json_or_table(records: list[dict], as_json: bool, table: Table, row) -> None:
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    for r in records:
        table.add_row(*row(r))
    console.print(table)


@app.command()
def optimizers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the optimizers and their hyperparameters (name, default, kind)."""

    def row(r):
        hps = ", ".join(f"{h['name']}={h['default']:g} ({h['kind']})" for h in r["hyperparameters"])
        return r["name"], hps or "-", r["evaluation"], r["summary"]

    _json_or_table(lodo.describe(), as_json, Table("name", "hyperparameters", "evaluation", "summary"), row)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the tasks with their parameter counts and options."""

    def row(r):
        opts = ", ".join(f"{o['name']}={o['default']}" for o in r["options"])
        return r["name"], f"{r['num_parameters']:,}", r["dtype"], opts or "-"

    table = Table("name", "parameters", "dtype", "options", caption="descriptions: lodotune tasks --json")
    _json_or_table(task_registry.describe(), as_json, table, row)


def _check_names(task: str, optimizer_names: list[str]) -> None:
    if task not in task_registry.TASK_NAMES:
        _fail(f"Unknown task {task!r} (allowed: {' | '.join(task_registry.TASK_NAMES)})")
    for name in optimizer_names:
        if name not in lodo.OPTIMIZERS:
            _fail(f"Unknown optimizer {name!r} (allowed: {' | '.join(lodo.OPTIMIZERS)})")


def _make_executor(kind: str, run_root: Path, **options: Any):
    from .executors import make_executor

    if kind == "ray" and not options.get("address"):
        options["temp_dir"] = str(run_root.resolve() / "ray")  # Ray's files stay with the run
    try:
        return make_executor(kind, **options)
    except (ImportError, ValueError) as err:
        _fail(str(err))
    raise AssertionError  # unreachable


def _paper_or_defaults(task: str, name: str) -> tuple[dict[str, float], str]:
    try:
        return schedules.paper_values(task, name), "paper Table 6"
    except ValueError:
        return lodo.get(name).defaults, "defaults"


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def _print_results(document: dict) -> None:
    low, high = document["window"]
    table = Table(
        "optimizer",
        f"loss, evals {low}–{high} (mean ± std)",
        "diverged",
        "steps/s",
        "values",
        title=f"{document['task']}: {len(document['seeds'])} seeds × {document['steps']} evaluations",
    )
    for name, e in document["optimizers"].items():
        loss = "diverged" if e["mean"] is None else f"{e['mean']:.6g} ± {e['std']:.2g}"
        table.add_row(
            name, loss, f"{e['diverged']}/{e['runs']}", f"{e['steps_per_second']:,.0f}", e["source"]
        )
    console.print(table)
    for name, e in document["optimizers"].items():
        console.print(f"  {name}: " + ", ".join(f"{k}={v:.6g}" for k, v in e["hyperparameters"].items()))


def _run_evaluation(task, entries, sources, *, steps, seeds, executor, out_dir, job_seed, step_scale):
    with _progress() as progress:
        bar = progress.add_task("evaluation runs", total=len(entries) * seeds)
        document = run_evaluation(
            task,
            entries,
            steps=steps,
            seeds=seeds,
            executor=executor,
            out_dir=out_dir,
            job_seed=job_seed,
            step_scale=step_scale,
            sources=sources,
            progress=lambda index, result: progress.advance(bar),
        )
    _print_results(document)
    console.print(f"wrote {out_dir}/results.json, results.md, curves.png")
    return document


ExecutorOpt = Annotated[
    str, typer.Option(help="Where trials run: 'ray' (local Ray, or --ray-address) or 'local'.")
]
RayAddressOpt = Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting one.")]
StepScaleOpt = Annotated[float, typer.Option(help="Multiply every step count by this (> 0).")]
SeedsOpt = Annotated[int, typer.Option(min=1, help="Evaluation runs per optimizer.")]


@app.command()
def tune(
    task: Annotated[str, typer.Argument(help="Task name (see `lodotune tasks`).")],
    optimizer: Annotated[str, typer.Argument(help="Optimizer to tune (see `lodotune optimizers`).")],
    generations: Annotated[
        int | None, typer.Option(min=1, help="Override the schedule's generations.")
    ] = None,
    population: Annotated[int | None, typer.Option(min=2, help="Override the population size.")] = None,
    step_scale: StepScaleOpt = 1.0,
    schedule: Annotated[str, typer.Option(help="'code' (the authors' code) or 'paper' (Table 5).")] = "code",
    schedule_file: Annotated[Path | None, typer.Option(help="A custom schedule (JSON).")] = None,
    normalization: Annotated[str, typer.Option(help="'code' (by name) or 'paper' (by role).")] = "code",
    decay_transform: Annotated[str, typer.Option(help="'log1m' (the authors') or 'logit'.")] = "log1m",
    space_file: Annotated[Path | None, typer.Option(help="A custom search space (JSON).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Job seed: every trial seed derives from it.")] = 0,
    executor: ExecutorOpt = "ray",
    ray_address: RayAddressOpt = None,
    num_cpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 1.0,
    num_gpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 0.0,
    baselines: Annotated[
        list[str] | None, typer.Option("--baseline", help="Also evaluate (repeatable).")
    ] = None,
    seeds: SeedsOpt = 8,
    evaluate: Annotated[bool, typer.Option(help="Run the final evaluation after tuning.")] = True,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/TASK-OPTIMIZER-TIME).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
) -> None:
    """Tune OPTIMIZER on TASK with the LODO paper's GA, then evaluate the result over N seeds."""
    baselines = baselines or []
    _check_names(task, [optimizer, *baselines])
    try:
        plan = (
            schedules.load_schedule(schedule_file)
            if schedule_file
            else schedules.schedule_for(task, schedule)
        )
        plan = plan.scaled(step_scale).with_overrides(generations=generations, population=population)
        space = (
            schedules.load_space(space_file)
            if space_file
            else schedules.space_for(optimizer, normalization=normalization, decay_transform=decay_transform)
        )
        config = TuneConfig(task, optimizer, plan, space, seed=seed)
    except ValueError as err:
        _fail(str(err))
    if resume is not None and out is not None and resume != out:
        _fail("give either --out or --resume, not both")
    root = resume or out or Path("runs") / f"{task}-{optimizer}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = RunDir(root)
    pool = _make_executor(
        executor,
        root,
        address=ray_address,
        num_cpus_per_trial=num_cpus_per_trial,
        num_gpus_per_trial=num_gpus_per_trial,
    )
    with pool:
        done = _tune_with_progress(config, run_dir, pool, resumed=resume is not None)
        if evaluate:
            final = schedules.apply_halving(plan, optimizer, done["hyperparameters"])
            halved = " (halved)" if final != done["hyperparameters"] else ""
            entries, sources = {optimizer: final}, {optimizer: "tuned" + halved}
            for name in baselines:
                if name != optimizer:
                    entries[name], sources[name] = _paper_or_defaults(task, name)
            _run_evaluation(
                task,
                entries,
                sources,
                steps=plan.final_steps,
                seeds=seeds,
                executor=pool,
                out_dir=run_dir.evaluation_dir,
                job_seed=seed,
                step_scale=plan.step_scale,
            )


def _tune_with_progress(config: TuneConfig, run_dir: RunDir, pool, *, resumed: bool) -> dict:
    plan, optimizer, task = config.schedule, config.optimizer, config.task
    with _progress() as progress:
        gen_bar = progress.add_task("generations", total=len(plan.generations))
        trial_bar = progress.add_task("trials", total=plan.population)

        def on_event(event: str, payload: dict) -> None:
            if event == "generation":
                progress.reset(trial_bar, total=payload["population"])
                progress.update(
                    trial_bar,
                    description=f"generation {payload['generation'] + 1}/{payload['of']}: "
                    f"σ={payload['sigma']:g}, {payload['steps']} steps",
                )
            elif event == "trial":
                progress.advance(trial_bar)
            elif event == "told":
                progress.update(gen_bar, completed=payload["generation"] + 1)
                values = ", ".join(f"{k}={v:.4g}" for k, v in payload["mean"].items())
                flag = " [yellow](all diverged: mean kept)[/yellow]" if payload["all_diverged"] else ""
                progress.console.print(
                    f"generation {payload['generation'] + 1}: best fitness {payload['best_fitness']:.6g}, "
                    f"elite mean {values}{flag}"
                )

        try:
            done = run_tuning(config, run_dir, pool, resume=resumed, progress=on_event)
        except ValueError as err:
            progress.stop()
            _fail(str(err))
        table = Table("hyperparameter", "tuned", "transform", title=f"tuned {optimizer} on {task}")
        for name, value in done["hyperparameters"].items():
            table.add_row(name, f"{value:.6g}", done["transforms"][name])
        console.print(table)
        console.print(f"wrote {run_dir.hyperparameters_path}")
    return done


@app.command("evaluate")
def evaluate_command(
    task: Annotated[str, typer.Argument(help="Task name (see `lodotune tasks`).")],
    optimizer_names: Annotated[list[str], typer.Argument(metavar="OPTIMIZER...", help="Optimizer names.")],
    tuned: Annotated[str, typer.Option(help="Values: 'paper' (Table 6) or 'defaults'.")] = "paper",
    hyperparameters: Annotated[
        Path | None, typer.Option(help="A hyperparameters.json from `lodotune tune` (for its optimizer).")
    ] = None,
    seeds: SeedsOpt = 8,
    steps: Annotated[
        int | None, typer.Option(min=2, help="Evaluations per run (default: the task's M).")
    ] = None,
    step_scale: StepScaleOpt = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="Job seed: the run seeds derive from it.")] = 0,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/evaluation"),
) -> None:
    """Run each OPTIMIZER over N seeds at the task's final length; report the paper's window loss."""
    _check_names(task, optimizer_names)
    if tuned not in ("paper", "defaults"):
        _fail(f"Invalid tuned: {tuned!r} (allowed: paper | defaults)")
    if not step_scale > 0:
        _fail(f"Invalid step_scale: {step_scale} (allowed: a number > 0)")
    from_file: dict[str, dict[str, float]] = {}
    if hyperparameters is not None:
        document = read_json(hyperparameters)
        from_file[document["optimizer"]] = document["hyperparameters"]
    entries, sources = {}, {}
    for name in optimizer_names:
        if name in from_file:
            entries[name], sources[name] = from_file[name], str(hyperparameters)
        elif tuned == "paper":
            try:
                entries[name], sources[name] = schedules.paper_values(task, name), "paper Table 6"
            except ValueError as err:
                _fail(f"{err}; use --tuned defaults or --hyperparameters FILE")
        else:
            entries[name], sources[name] = lodo.get(name).defaults, "defaults"
    total = (
        steps if steps is not None else max(2, round(schedules.schedule_for(task).final_steps * step_scale))
    )
    with _make_executor(executor, out, address=ray_address) as pool:
        _run_evaluation(
            task,
            entries,
            sources,
            steps=total,
            seeds=seeds,
            executor=pool,
            out_dir=out,
            job_seed=seed,
            step_scale=step_scale,
        )
