"""The ``lodotune`` command line (typer + rich): list, tune (ga | asha | onepass), evaluate."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import lodo
import schedules
import tasks as task_registry

from . import events as ev
from ._validation import describe_validation
from .final import results_tables
from .jobs import run_evaluate_job, run_reproduce_job, run_tune_job
from .reproduce import EXPERIMENTS, ReproduceJob
from .rundir import RunDir, read_json
from .runtime import JobContext, Runtime
from .specs import MAX_STUDIES, EvaluateJob, TuneJob
from .strategies import STRATEGIES, describe_strategies, get_strategy
from .studies import studies_tables
from .tables import Summary

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
        return r["name"], hps or "-", r["evaluation"], "yes" if r["vectorized"] else "-", r["summary"]

    table = Table("name", "hyperparameters", "evaluation", "vectorized", "summary")
    _json_or_table(lodo.describe(), as_json, table, row)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the tasks with their parameter counts and options."""

    def row(r):
        opts = ", ".join(f"{o['name']}={o['default']}" for o in r["options"])
        vectorized = "yes" if r["vectorized"] else "-"
        return r["name"], f"{r['num_parameters']:,}", r["dtype"], vectorized, opts or "-"

    table = Table(
        "name", "parameters", "dtype", "vectorized", "options", caption="descriptions: lodotune tasks --json"
    )
    _json_or_table(task_registry.describe(), as_json, table, row)


def _print_summary(summary: Summary) -> None:
    table = Table(*summary.columns, title=summary.title)
    for row in summary.rows:
        table.add_row(*row)
    console.print(table)
    for line in summary.lines:
        console.print(line, soft_wrap=True)


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


class ProgressView:
    """The event sink of a command: rich progress bars, one line per finished generation."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.outer: Any = None  # generations
        self.inner: Any = None  # the trials, updates or runs of the current unit
        self.study = ""  # "study k/K: " while a study of a multi-study job runs

    def _bar(self, description: str, total: int | None) -> Any:
        if self.inner is not None:
            self.progress.remove_task(self.inner)
        self.inner = self.progress.add_task(description, total=total)
        return self.inner

    def __call__(self, event: ev.Event) -> None:
        progress = self.progress
        match event:
            case ev.StudyStarted(study=k, of=of):
                self.study = f"study {k + 1}/{of}: "
            case ev.StudyFinished(summary=line):
                self.study = ""
                progress.remove_task(self.outer)  # the next study's generations get a bar of their own
                self.outer = None
                progress.console.print(line, soft_wrap=True)
            case ev.PhaseStarted(unit="generations", total=total):
                self.outer = progress.add_task(f"{self.study}generations", total=total)
            case ev.PhaseStarted(phase=phase, unit=unit, total=total, strategy=strategy):
                self._bar(
                    f"{strategy} {unit}" if phase == "tuning" else f"{self.study}evaluation runs", total
                )
            case ev.GenerationStarted(generation=g, of=of, sigma=sigma, steps=steps, population=population):
                self._bar(f"generation {g + 1}/{of}: σ={sigma:g}, {steps} steps", population)
            case ev.TrialFinished() | ev.EvaluationRunFinished() | ev.Checkpoint(kind="update"):
                progress.advance(self.inner)
            case ev.Checkpoint(kind="generation", index=g, summary=line):
                progress.update(self.outer, completed=g + 1)
                progress.console.print(line, soft_wrap=True)


def _run(job_runner, *args, **kwargs) -> dict:
    """Run a job under progress bars; its errors of input or state are printed, not raised."""
    with _progress() as progress:
        kwargs["ctx"].emit = ProgressView(progress)
        try:
            return job_runner(*args, **kwargs)
        except ValueError as err:
            progress.stop()
            fail(str(err))
    raise AssertionError  # unreachable


def _validated(model, data: dict[str, Any]):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        fail(describe_validation(err, tags=STRATEGIES))


def _reused_note(document: dict, out_dir: Path, earlier: str = "finished earlier") -> None:
    if document.get("reused_runs"):
        console.print(
            f"{document['reused_runs']} runs were {earlier} and read back from {out_dir}/runs "
            "(remove that folder to run them again)",
            soft_wrap=True,
        )


ExecutorOpt = Annotated[
    str, typer.Option(help="Where trials run: 'ray' (local Ray, or --ray-address) or 'local'.")
]
RayAddressOpt = Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting one.")]
StepScaleOpt = Annotated[float, typer.Option(help="Multiply every step count by this (> 0).")]
SeedsOpt = Annotated[int, typer.Option(min=1, help="Evaluation runs per optimizer.")]
DeviceOpt = Annotated[
    str, typer.Option(help="Where each trial computes: cpu, cuda or cuda:N (with Ray, the GPU it assigned).")
]
VectorizeOpt = Annotated[
    str,
    typer.Option(
        help="Run a generation's trials (an evaluation's seeds) as one batched program: auto (every "
        "supported task and optimizer: `lodotune tasks`, `lodotune optimizers`), on (refuse others) or off."
    ),
]
MembersPerTaskOpt = Annotated[
    int | None,
    typer.Option(help="Members per vectorized shard (default: a population over the devices it may use)."),
]
MetaDtypeOpt = Annotated[
    str | None,
    typer.Option(
        help="LODO's meta-state dtype: float64 (default, the authors') or float32 (half the memory)."
    ),
]

TaskOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--task-option",
        metavar="KEY=VALUE",
        help="A task option (repeatable), e.g. batch_size=3200 or start=random (see `lodotune tasks`).",
    ),
]


def parse_task_options(pairs: list[str] | None, flag: str = "--task-option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as task options: a VALUE that reads as JSON (3200, 0.5, true, null) is
    that value, any other is the string; the task checks names and values."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            fail(f"Invalid {flag}: {pair!r} (allowed: KEY=VALUE, e.g. batch_size=3200)")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        options[key] = value if isinstance(value, (bool, int, float, str)) or value is None else text
    return options


# each strategy's command-line options: flag name → option name in the strategy's options model
STRATEGY_FLAGS = {
    "ga": ("schedule", "generations", "population", "normalization", "decay_transform"),
    "asha": (
        "num_samples",
        "budget",
        "max_t",
        "grace_period",
        "reduction_factor",
        "report_every",
        "tune_baselines",
        "time_budget_s",
    ),
    "onepass": (
        "steps",
        "update_interval",
        "lookback",
        "meta_lr",
        "per_parameter_lr",
        "tuned",
        "initialisations",
        "validation",
    ),
}


def _runtime(executor: str, ray_address: str | None) -> Runtime:
    if executor not in ("ray", "local"):
        fail(f"Invalid executor: {executor!r} (allowed: ray | local)")
    return Runtime(executor=executor, ray_address=ray_address)


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
        str | None, typer.Option(help="[ga] 'code' (the authors' code, default) or 'paper' (Table 5).")
    ] = None,
    schedule_file: Annotated[Path | None, typer.Option(help="[ga] A custom schedule (JSON).")] = None,
    normalization: Annotated[
        str | None, typer.Option(help="[ga] 'code' (by name, default) or 'paper' (by role).")
    ] = None,
    decay_transform: Annotated[
        str | None, typer.Option(help="[ga] 'log1m' (the authors', default) or 'logit'.")
    ] = None,
    space_file: Annotated[Path | None, typer.Option(help="[ga] A custom search space (JSON).")] = None,
    num_samples: Annotated[int | None, typer.Option(help="[asha] Configurations drawn (200).")] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="[asha] What max_t counts: examples (default with minibatches), updates (default "
            "elsewhere), seconds or evaluations."
        ),
    ] = None,
    max_t: Annotated[
        int | None,
        typer.Option(
            help="[asha] Budget per trial (default: the task's final length, in the budget's unit)."
        ),
    ] = None,
    grace_period: Annotated[
        int | None, typer.Option(help="[asha] Budget before the first rung (10 updates' worth; 1 s).")
    ] = None,
    reduction_factor: Annotated[
        float | None, typer.Option(help="[asha] Keep the best 1/this at each rung (4).")
    ] = None,
    report_every: Annotated[
        int | None, typer.Option(help="[asha] Budget between reports to Tune (grace period).")
    ] = None,
    tune_baselines: Annotated[
        bool | None,
        typer.Option(
            help="[asha] Tune each --baseline with ASHA too (default), or run Table 6's / defaults."
        ),
    ] = None,
    evaluation_task_options: Annotated[
        list[str] | None,
        typer.Option(
            "--evaluation-task-option",
            metavar="KEY=VALUE",
            help="[asha] A task option of the final runs only (repeatable), e.g. start=fixed.",
        ),
    ] = None,
    time_budget_s: Annotated[
        float | None, typer.Option(help="[asha] Stop the search after this many seconds.")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="[onepass] Training steps (default: the paper's, UCI 4000, Fashion-MNIST 10000; "
            "elsewhere the task's final length)."
        ),
    ] = None,
    update_interval: Annotated[
        int | None, typer.Option(help="[onepass] Steps per hyperparameter update (10).")
    ] = None,
    lookback: Annotated[int | None, typer.Option(help="[onepass] Neumann series terms (5).")] = None,
    meta_lr: Annotated[
        float | None, typer.Option(help="[onepass] The meta-Adam's learning rate (0.05).")
    ] = None,
    per_parameter_lr: Annotated[
        bool | None, typer.Option(help="[onepass] One learning rate per weight.")
    ] = None,
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
    initialisations: Annotated[
        int | None, typer.Option(help="[onepass] Random initialisations evaluated, each with Random (100).")
    ] = None,
    validation: Annotated[
        str | None, typer.Option(help="[onepass] The objective: minibatch (default, the paper's) or full.")
    ] = None,
    task_option: TaskOptionOpt = None,
    seed: Annotated[int, typer.Option(min=0, help="Job seed: every trial seed derives from it.")] = 0,
    executor: ExecutorOpt = "ray",
    ray_address: RayAddressOpt = None,
    num_cpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 1.0,
    num_gpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 0.0,
    device: DeviceOpt = "cpu",
    meta_dtype: MetaDtypeOpt = None,
    vectorize: VectorizeOpt = "auto",
    members_per_task: MembersPerTaskOpt = None,
    baselines: Annotated[
        list[str] | None, typer.Option("--baseline", help="Also evaluate (repeatable; ga and asha).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Evaluation runs per optimizer (ga 8, asha 50: the papers').")
    ] = None,
    evaluate: Annotated[bool, typer.Option(help="Run the final evaluation after tuning.")] = True,
    studies: Annotated[
        int,
        typer.Option(
            help="[ga] Independent GA runs from derived seeds (1–64), each evaluated over the --seeds; "
            "the job keeps the median study, studies.json the spread (RUN_DIR/studies/K/: each study)."
        ),
    ] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/TASK-OPTIMIZER-TIME).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="[ga, asha] Continue the run in this directory.")
    ] = None,
) -> None:
    """Tune OPTIMIZER on TASK (the LODO paper's GA by default), then evaluate the result over N seeds."""
    given = {name: value for name, value in locals().items() if value is not None}
    try:
        chosen = get_strategy(strategy)
    except ValueError as err:
        fail(str(err))
    initial = {
        k: v
        for k, v in (
            ("lr", initial_lr),
            ("weight_decay", initial_weight_decay),
            ("momentum", initial_momentum),
        )
        if v is not None
    }
    flags = {
        **{f: s for s, fs in STRATEGY_FLAGS.items() for f in fs},
        "schedule_file": "ga",
        "space_file": "ga",
    }
    flags.update(
        evaluation_task_options="asha",
        tuned_names="onepass",
        initial_lr="onepass",
        initial_weight_decay="onepass",
        initial_momentum="onepass",
    )
    foreign = sorted(f"--{f.replace('_', '-')}" for f, s in flags.items() if s != strategy and f in given)
    if foreign:
        fail(f"{', '.join(foreign)}: not options of --strategy {strategy} (see `lodotune strategies`)")
    options = {name: given[name] for name in STRATEGY_FLAGS[strategy] if name in given and name != "tuned"}
    if evaluation_task_options:
        options["evaluation_task_options"] = parse_task_options(
            evaluation_task_options, "--evaluation-task-option"
        )
    if strategy == "onepass":
        options.update(
            {"tuned": tuned_names} if tuned_names else {}, **({"initial": initial} if initial else {})
        )
    try:
        if schedule_file is not None:
            options["custom_schedule"] = schedules.load_schedule(schedule_file).model_dump(mode="json")
        if space_file is not None:
            options["custom_space"] = schedules.load_space(space_file).model_dump(mode="json")
    except (OSError, ValueError) as err:
        fail(str(err))
    job = _validated(
        TuneJob,
        {
            "task": task,
            "optimizer": optimizer,
            "strategy": strategy,
            "strategy_options": options,
            "seed": seed,
            "step_scale": step_scale,
            "device": device,
            "meta_dtype": meta_dtype,
            "vectorize": vectorize,
            "members_per_task": members_per_task,
            "num_cpus_per_trial": num_cpus_per_trial,
            "num_gpus_per_trial": num_gpus_per_trial,
            "baselines": baselines or [],
            **({"seeds": seeds} if seeds is not None else {}),
            "evaluate": evaluate,
            "task_options": parse_task_options(task_option),
            "studies": studies,
        },
    )
    if resume is not None and out is not None and resume != out:
        fail("give either --out or --resume, not both")
    root = resume or out or Path("runs") / f"{task}-{optimizer or strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    ctx = JobContext(
        RunDir(root),
        _runtime(executor, ray_address),
        resume=resume is not None,
        num_cpus_per_trial=num_cpus_per_trial,
        num_gpus_per_trial=num_gpus_per_trial,
    )
    documents = _run(run_tune_job, job, ctx=ctx)
    if "studies" in documents:
        for summary in studies_tables(documents["studies"]):
            _print_summary(summary)
        console.print(f"wrote {ctx.run_dir.studies_path}", soft_wrap=True)
    _print_summary(chosen.summary(documents["hyperparameters"]))
    console.print(f"wrote {ctx.run_dir.hyperparameters_path}")
    if "results" in documents:
        for summary in chosen.results_summary(documents["results"]):
            _print_summary(summary)
        earlier = "the median study's or finished earlier" if "studies" in documents else "finished earlier"
        _reused_note(documents["results"], ctx.evaluation_path, earlier)
        console.print(f"wrote {ctx.evaluation_path}/results.json", soft_wrap=True)


@app.command()
def strategies(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the tuning strategies and their settings (defaults)."""
    records = describe_strategies()

    def row(r):
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        return r["name"], r["summary"], ", ".join(r["optimizers"]), settings

    _json_or_table(records, as_json, Table("name", "summary", "optimizers", "settings"), row)


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
    meta_dtype: MetaDtypeOpt = None,
    vectorize: VectorizeOpt = "auto",
    members_per_task: MembersPerTaskOpt = None,
    task_option: TaskOptionOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/evaluation"),
) -> None:
    """Run each OPTIMIZER over N seeds at the task's final length; report the paper's window loss."""
    job = _validated(
        EvaluateJob,
        {
            "task": task,
            "optimizers": optimizer_names,
            "tuned": tuned,
            "seeds": seeds,
            "steps": steps,
            "step_scale": step_scale,
            "seed": seed,
            "device": device,
            "meta_dtype": meta_dtype,
            "vectorize": vectorize,
            "members_per_task": members_per_task,
            "task_options": parse_task_options(task_option),
        },
    )
    document = None
    if hyperparameters is not None:
        try:
            document = read_json(hyperparameters)
            tuned_optimizer = document["optimizer"]
            lodo.get(tuned_optimizer).check_values(document["hyperparameters"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            fail(f"Invalid hyperparameters file {str(hyperparameters)!r}: {err!r} (allowed: a run's JSON)")
        if tuned_optimizer not in optimizer_names:
            fail(f"{hyperparameters} holds values for {tuned_optimizer!r}: name it among the OPTIMIZERs")
    ctx = JobContext(RunDir(out), _runtime(executor, ray_address), evaluation_dir=out)
    results = _run(run_evaluate_job, job, ctx=ctx, tuned=document, tuned_source=str(hyperparameters))
    for summary in results_tables(results):
        _print_summary(summary)
    _reused_note(results, out)
    console.print(f"wrote {out}/results.json, results.md, curves.png")


@app.command("reproduce")
def reproduce_command(
    experiments: Annotated[
        list[str] | None,
        typer.Option(
            "--experiments", help=f"Experiments to run (repeat; default all): {', '.join(EXPERIMENTS)}."
        ),
    ] = None,
    scale: Annotated[
        str, typer.Option(help="quick (minutes on a laptop) or paper (the paper's lengths).")
    ] = "quick",
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Runs per optimizer, initialisations per method of a one-pass experiment (default: "
            "each experiment's).",
        ),
    ] = None,
    studies: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_STUDIES,
            help="GA studies per optimizer of rosenbrock-ga (default: "
            + ", ".join(f"{k} at {scale} scale" for scale, k in EXPERIMENTS["rosenbrock-ga"].studies.items())
            + ").",
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    vectorize: VectorizeOpt = "auto",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    out: Annotated[Path, typer.Option(help="Output directory (finished runs in it are reused).")] = Path(
        "runs/reproduce"
    ),
) -> None:
    """The papers' experiments beside their numbers (the LODO paper's with Table 6 values; the
    AdamQLR and one-pass papers' comparisons, checked against their claims): report.md, report.json."""
    job = _validated(
        ReproduceJob,
        {
            "experiments": experiments or [],
            "scale": scale,
            "seeds": seeds,
            "studies": studies,
            "device": device,
            "vectorize": vectorize,
        },
    )
    ctx = JobContext(RunDir(out), _runtime(executor, ray_address))
    with _progress() as progress:
        ctx.emit = ProgressView(progress)
        try:
            report = run_reproduce_job(
                job, ctx, log=lambda line: progress.console.print(line, soft_wrap=True)
            )
        except ValueError as err:
            progress.stop()
            fail(str(err))
    table = Table("experiment", "optimizer", "paper", "ours", "verdict", title=f"reproduce ({scale} scale)")
    for row in report["rows"]:
        ours = (
            "–"
            if row["ours"] is None
            else f"{row['ours']:.4g}" + (f" ± {row['std']:.2g}" if row["std"] else "")
        )
        paper = (
            row["paper"] if isinstance(row["paper"], str) or row["paper"] is None else f"{row['paper']:.4g}"
        )
        table.add_row(row["experiment"], row["optimizer"], str(paper or "–"), ours, row["verdict"])
    console.print(table)
    console.print(f"wrote {out}/report.md, {out}/report.json", soft_wrap=True)
