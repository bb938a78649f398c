"""The ``lodotune`` command line (typer + rich): list, tune (ga | asha | onepass), evaluate."""

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

from .asha import AshaConfig, tune_asha
from .evaluate import evaluate as run_evaluation
from .final import FinalEvaluation, reference_values, tuned_values, write_bootstrap
from .onepass import HYPERPARAMETERS as ONEPASS_HYPERPARAMETERS
from .onepass import OnePassConfig, evaluate_onepass, tune_onepass
from .rundir import RunDir, read_json
from .strategies import STRATEGIES, describe_strategies
from .tuning import TuneConfig
from .tuning import tune as run_tuning

app = typer.Typer(help="Tune and compare optimizers with the LODO paper's protocol.", no_args_is_help=True)
console = Console()


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with status 2 (unwrapped: names and paths stay whole)."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
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
        fail(f"Unknown task {task!r} (allowed: {' | '.join(task_registry.TASK_NAMES)})")
    for name in optimizer_names:
        if name not in lodo.OPTIMIZERS:
            fail(f"Unknown optimizer {name!r} (allowed: {' | '.join(lodo.OPTIMIZERS)})")


def _make_executor(kind: str, run_root: Path, **options: Any):
    from .executors import make_executor

    if kind == "ray" and not options.get("address"):
        options["temp_dir"] = str(run_root.resolve() / "ray")  # Ray's files stay with the run
    try:
        return make_executor(kind, **options)
    except (ImportError, ValueError) as err:
        fail(str(err))
    raise AssertionError  # unreachable


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


def _run_evaluation(
    task,
    entries,
    sources,
    *,
    steps,
    seeds,
    executor,
    out_dir,
    job_seed,
    step_scale,
    task_options=None,
    device="cpu",
):
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
            task_options=task_options,
            device=device,
            sources=sources,
            progress=lambda index, result: progress.advance(bar),
        )
    _print_results(document)
    if document["reused_runs"]:
        console.print(
            f"{document['reused_runs']} runs were finished earlier and read back from {out_dir}/runs "
            "(remove that folder to run them again)",
            soft_wrap=True,
        )
    console.print(f"wrote {out_dir}/results.json, results.md, curves.png")
    return document


ExecutorOpt = Annotated[
    str, typer.Option(help="Where trials run: 'ray' (local Ray, or --ray-address) or 'local'.")
]
RayAddressOpt = Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting one.")]
StepScaleOpt = Annotated[float, typer.Option(help="Multiply every step count by this (> 0).")]
SeedsOpt = Annotated[int, typer.Option(min=1, help="Evaluation runs per optimizer.")]
DeviceOpt = Annotated[
    str, typer.Option(help="Where each trial computes: cpu, cuda or cuda:N (with Ray, the GPU it assigned).")
]


@app.command()
def tune(
    task: Annotated[str, typer.Argument(help="Task name (see `lodotune tasks`).")],
    optimizer: Annotated[
        str | None,
        typer.Argument(help="Optimizer to tune (see `lodotune optimizers`); not with --strategy onepass."),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="'ga' (the LODO paper's GA), 'asha' or 'onepass' (see `lodotune strategies`).")
    ] = "ga",
    generations: Annotated[
        int | None, typer.Option(min=1, help="[ga] Override the schedule's generations.")
    ] = None,
    population: Annotated[int | None, typer.Option(min=2, help="[ga] Override the population size.")] = None,
    step_scale: StepScaleOpt = 1.0,
    schedule: Annotated[
        str, typer.Option(help="[ga] 'code' (the authors' code) or 'paper' (Table 5).")
    ] = "code",
    schedule_file: Annotated[Path | None, typer.Option(help="[ga] A custom schedule (JSON).")] = None,
    normalization: Annotated[str, typer.Option(help="[ga] 'code' (by name) or 'paper' (by role).")] = "code",
    decay_transform: Annotated[str, typer.Option(help="[ga] 'log1m' (the authors') or 'logit'.")] = "log1m",
    space_file: Annotated[Path | None, typer.Option(help="[ga] A custom search space (JSON).")] = None,
    num_samples: Annotated[int, typer.Option(help="[asha] Configurations drawn.")] = 200,
    max_t: Annotated[
        int | None, typer.Option(help="[asha] Steps per trial (default: the task's final length).")
    ] = None,
    grace_period: Annotated[int, typer.Option(help="[asha] Steps before the first rung.")] = 10,
    reduction_factor: Annotated[float, typer.Option(help="[asha] Keep the best 1/this at each rung.")] = 4.0,
    report_every: Annotated[int, typer.Option(help="[asha] Steps between reports to Tune.")] = 10,
    time_budget_s: Annotated[
        float | None, typer.Option(help="[asha] Stop the search after this many seconds.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="[onepass] Training steps (default: the task's final length).")
    ] = None,
    update_interval: Annotated[int, typer.Option(help="[onepass] Steps per hyperparameter update.")] = 10,
    lookback: Annotated[int, typer.Option(help="[onepass] Neumann series terms.")] = 5,
    meta_lr: Annotated[float, typer.Option(help="[onepass] The meta-Adam's learning rate.")] = 0.05,
    per_parameter_lr: Annotated[bool, typer.Option(help="[onepass] One learning rate per weight.")] = False,
    tuned_names: Annotated[
        list[str] | None,
        typer.Option("--tuned", help="[onepass] Hyperparameters to tune (repeatable; default all three)."),
    ] = None,
    initial_lr: Annotated[float | None, typer.Option(help="[onepass] Starting lr (default: drawn).")] = None,
    initial_weight_decay: Annotated[
        float | None, typer.Option(help="[onepass] Starting weight decay (default: drawn).")
    ] = None,
    initial_momentum: Annotated[
        float | None, typer.Option(help="[onepass] Starting momentum (default: drawn).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Job seed: every trial seed derives from it.")] = 0,
    executor: ExecutorOpt = "ray",
    ray_address: RayAddressOpt = None,
    num_cpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 1.0,
    num_gpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 0.0,
    device: DeviceOpt = "cpu",
    baselines: Annotated[
        list[str] | None, typer.Option("--baseline", help="Also evaluate (repeatable; ga and asha).")
    ] = None,
    seeds: SeedsOpt = 8,
    evaluate: Annotated[bool, typer.Option(help="Run the final evaluation after tuning.")] = True,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/TASK-OPTIMIZER-TIME).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="[ga, asha] Continue the run in this directory.")
    ] = None,
) -> None:
    """Tune OPTIMIZER on TASK (the LODO paper's GA by default), then evaluate the result over N seeds."""
    baselines = baselines or []
    if strategy not in STRATEGIES:
        fail(f"Invalid strategy: {strategy!r} (allowed: {' | '.join(STRATEGIES)})")
    if strategy == "onepass":
        if optimizer is not None:
            fail(f"Invalid optimizer: {optimizer!r} (allowed: none with --strategy onepass, which tunes SGD)")
        if baselines or resume is not None:
            fail("--baseline and --resume are not used with --strategy onepass")
        _check_names(task, [])
    else:
        if optimizer is None:
            fail(f"Missing OPTIMIZER (needed by --strategy {strategy})")
        _check_names(task, [optimizer, *baselines])
    if not step_scale > 0:
        fail(f"Invalid step_scale: {step_scale} (allowed: a number > 0)")
    if resume is not None and out is not None and resume != out:
        fail("give either --out or --resume, not both")
    root = resume or out or Path("runs") / f"{task}-{optimizer or strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = RunDir(root)
    if strategy == "onepass":
        initial = {
            name: value
            for name, value in (
                ("lr", initial_lr),
                ("weight_decay", initial_weight_decay),
                ("momentum", initial_momentum),
            )
            if value is not None
        }
        try:
            config = OnePassConfig(
                task,
                steps=steps or _final_length(task, step_scale),
                update_interval=update_interval,
                lookback=lookback,
                meta_lr=meta_lr,
                per_parameter_lr=per_parameter_lr,
                tuned=tuple(tuned_names or ONEPASS_HYPERPARAMETERS),
                initial=initial,
                seed=seed,
            )
        except ValueError as err:
            fail(str(err))
        _tune_onepass(config, run_dir, seeds=seeds if evaluate else 0)
        return
    if strategy == "asha":
        try:
            config = AshaConfig(
                task,
                optimizer,
                num_samples=num_samples,
                max_t=max_t or _final_length(task, step_scale),
                grace_period=grace_period,
                reduction_factor=reduction_factor,
                report_every=report_every,
                time_budget_s=time_budget_s,
                seed=seed,
                device=device,
                num_cpus_per_trial=num_cpus_per_trial,
                num_gpus_per_trial=num_gpus_per_trial,
            )
        except ValueError as err:
            fail(str(err))
    else:
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
                else schedules.space_for(
                    optimizer, normalization=normalization, decay_transform=decay_transform
                )
            )
            config = TuneConfig(task, optimizer, plan, space, seed=seed, device=device)
        except ValueError as err:
            fail(str(err))
    pool = _make_executor(
        executor,
        root,
        address=ray_address,
        num_cpus_per_trial=num_cpus_per_trial,
        num_gpus_per_trial=num_gpus_per_trial,
    )
    with pool:
        if strategy == "asha":
            done = _tune_asha_with_progress(config, run_dir, resumed=resume is not None)
        else:
            done = _tune_with_progress(config, run_dir, pool, resumed=resume is not None)
        if evaluate:
            final = FinalEvaluation.after_tuning(config, done, baselines, step_scale=step_scale)
            document = _run_evaluation(
                task,
                final.entries,
                final.sources,
                steps=final.steps,
                seeds=seeds,
                executor=pool,
                out_dir=run_dir.evaluation_dir,
                job_seed=seed,
                step_scale=final.step_scale,
                task_options=final.task_options,
                device=device,
            )
            if strategy == "asha":
                _print_bootstrap(write_bootstrap(document, run_dir.evaluation_dir, seed), run_dir)


def _final_length(task: str, step_scale: float) -> int:
    """The task's final-evaluation length (its GA schedule's M), scaled."""
    return max(2, round(schedules.schedule_for(task).final_steps * step_scale))


def _tune_asha_with_progress(config: AshaConfig, run_dir: RunDir, *, resumed: bool) -> dict:
    with _progress() as progress:
        bar = progress.add_task(f"ASHA trials (rungs at {config.rungs()} steps)", total=config.num_samples)

        def on_event(event: str, payload: dict) -> None:
            progress.advance(bar)

        try:
            done = tune_asha(config, run_dir, progress=on_event, resume=resumed)
        except ValueError as err:
            progress.stop()
            fail(str(err))
    best = done["best"]
    table = Table("hyperparameter", "tuned", "drawn from", title=f"ASHA: {config.optimizer} on {config.task}")
    for name, value in done["hyperparameters"].items():
        table.add_row(name, f"{value:.6g}", done["transforms"].get(name, "default (not tuned)"))
    for name, value in done["task_options"].items():
        table.add_row(name, str(value), "choice")
    console.print(table)
    value = "diverged" if best["value"] is None else f"{best['value']:.6g}"
    console.print(
        f"best {done['metric']} {value} after {best['steps']} steps; "
        f"{done['stopped_early']}/{len(done['trials'])} trials stopped early"
    )
    console.print(f"wrote {run_dir.hyperparameters_path}")
    return done


def _print_bootstrap(summary: dict, run_dir: RunDir) -> None:
    table = Table(
        "optimizer", "quantity", "median", "bootstrap median (mean ± std)", title="bootstrap medians"
    )
    for name, quantities in summary.items():
        for quantity, s in quantities.items():
            if s["median"] is not None:
                spread = f"{s['bootstrap_mean']:.6g} ± {s['bootstrap_std']:.2g}"
                table.add_row(name, quantity, f"{s['median']:.6g}", spread)
    console.print(table)
    console.print(f"wrote {run_dir.evaluation_dir}/bootstrap.json")


def _tune_onepass(config: OnePassConfig, run_dir: RunDir, *, seeds: int) -> None:
    updates = -(-config.steps // config.update_interval)
    with _progress() as progress:
        bar = progress.add_task("hyperparameter updates", total=updates)

        def on_event(event: str, payload: dict) -> None:
            progress.update(bar, completed=payload["update"] + 1)

        try:
            done = tune_onepass(config, run_dir, progress=on_event)
        except ValueError as err:
            progress.stop()
            fail(str(err))
    table = Table("hyperparameter", "start", "end", "transform", title=f"one-pass SGD on {config.task}")
    for name, value in done["hyperparameters"].items():
        table.add_row(name, f"{done['initial'][name]:.6g}", f"{value:.6g}", done["transforms"][name])
    console.print(table)
    flag = " [yellow](diverged)[/yellow]" if done["diverged"] else ""
    metrics = ", ".join(f"{k}={v:.6g}" for k, v in done["metrics"].items())
    console.print(f"trained model after {done['steps']} steps: {metrics}{flag}")
    console.print(f"wrote {run_dir.hyperparameters_path}")
    if seeds < 1:
        return
    with _progress() as progress:
        bar = progress.add_task("evaluation runs", total=seeds)
        document = evaluate_onepass(
            config, seeds=seeds, out_dir=run_dir.evaluation_dir, progress=lambda i, e: progress.advance(bar)
        )
    table = Table(
        "quantity",
        "median",
        "bootstrap median (mean ± std)",
        title=f"{config.task}: one-pass over {seeds} seeds ({document['diverged']} diverged)",
    )
    for quantity, s in document["summary"].items():
        if s["median"] is not None:
            table.add_row(
                quantity, f"{s['median']:.6g}", f"{s['bootstrap_mean']:.6g} ± {s['bootstrap_std']:.2g}"
            )
    console.print(table)
    console.print(f"wrote {run_dir.evaluation_dir}/results.json")


@app.command()
def strategies(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the tuning strategies and their settings (defaults)."""
    records = describe_strategies()

    def row(r):
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        return r["name"], r["summary"], ", ".join(r["optimizers"]), settings

    _json_or_table(records, as_json, Table("name", "summary", "optimizers", "settings"), row)


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
            fail(str(err))
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
    device: DeviceOpt = "cpu",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/evaluation"),
) -> None:
    """Run each OPTIMIZER over N seeds at the task's final length; report the paper's window loss."""
    _check_names(task, optimizer_names)
    if tuned not in ("paper", "defaults"):
        fail(f"Invalid tuned: {tuned!r} (allowed: paper | defaults)")
    if not step_scale > 0:
        fail(f"Invalid step_scale: {step_scale} (allowed: a number > 0)")
    from_file: dict[str, tuple[dict[str, float], str]] = {}
    task_options: dict = {}
    if hyperparameters is not None:
        try:
            document = read_json(hyperparameters)
            from_file[document["optimizer"]] = tuned_values(document, str(hyperparameters))
        except (OSError, ValueError, KeyError, TypeError) as err:
            fail(f"Invalid hyperparameters file {str(hyperparameters)!r}: {err!r} (allowed: a run's JSON)")
        if set(from_file) - set(optimizer_names):
            fail(
                f"{hyperparameters} holds values for {document['optimizer']!r}: name it among the OPTIMIZERs"
            )
        if document.get("task") == task:  # ASHA's tuned batch size, say
            task_options = dict(document.get("task_options") or {})
    entries, sources = {}, {}
    final_runs = schedules.schedule_for(task)  # Table 6 and GA values are halved where it says (§3.5)
    for name in optimizer_names:
        if name in from_file:
            entries[name], sources[name] = from_file[name]
        else:
            entries[name], sources[name] = reference_values(task, name, tuned, schedule=final_runs)
            if tuned == "paper" and sources[name] == "defaults":  # say why the paper has none
                try:
                    schedules.paper_values(task, name)
                except ValueError as err:
                    fail(f"{err}; use --tuned defaults or --hyperparameters FILE")
    total = steps if steps is not None else max(2, round(final_runs.final_steps * step_scale))
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
            task_options=task_options,
            device=device,
        )
