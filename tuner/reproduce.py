"""``lodotune reproduce``: the LODO paper's experiments with its Table 6 values, side by side with
the numbers the paper prints (lodo.md §5.2), each row with a verdict a reader can trust.

An experiment is an evaluation plan (:mod:`tuner.final`) run through the job's executor into
``OUT/<experiment>/evaluation`` (so a killed reproduce run resumes with its finished runs), then
compared with the paper:

* ``match``: every seed gave the same value (a deterministic optimizer) and it is within 1 % of
  the paper's;
* ``within spread``: within 3 standard deviations of the paper's value (the paper's std where it
  prints one, else ours over the seeds);
* ``differs``: neither, with the known reason where there is one (Table 8's Momentum misprint,
  RMSprop's guessed learning rate, a stand-in dataset, a shorter scale), else "unexplained";
* ``no paper value``: the paper's number was lost in extraction (the note says which table);
* ``not run``: the experiment could not run here (a missing dataset, no GPU at paper scale), why.

Image generation compares ratios to LODO (the paper's test losses come from one run at 300 k
steps; at another scale or on the stand-in dataset only the ordering can be compared).

``rosenbrock-ga`` reproduces the tuning itself: K independent GA studies (:mod:`tuner.studies`)
of LODO and of Adam with the README's main-job settings, each study's tuned set evaluated over the
seeds. Its verdict asks whether the paper's printed value lies inside the studies' spread (their
range, widened by 3 of the paper's std where it prints one); the row's value is the median study's
window loss, and the tuned values stand beside Table 6's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import schedules
import tasks

from . import events as ev
from . import plots
from ._validation import invalid
from .final import EvaluationPlan, paper_entry, run_plan
from .jobs import run_tune_job
from .population import Vectorize, check_vectorize
from .rundir import RunDir, versions, write_json
from .runtime import JobContext, Runtime
from .specs import MAX_STUDIES, Device, TuneJob

Scale = Literal["quick", "paper"]
SCALES: tuple[str, ...] = ("quick", "paper")
Verdict = Literal["match", "within spread", "differs", "no paper value", "not run"]
MATCH_REL = 0.01
SPREAD_STDS = 3.0
LOCAL = Runtime("local")


@dataclass(frozen=True)
class PaperValue:
    """A number the paper prints (``value``, ``std`` where it prints one) and where; ``lost``:
    why there is no number (``value`` None)."""

    value: float | None
    std: float | None = None
    table: str = ""
    lost: str | None = None


@dataclass(frozen=True)
class StudiesExperiment:
    """The paper's GA reproduced as K independent studies per optimizer (``studies`` per scale),
    each tuned with ``schedule`` and evaluated over ``seeds``, against ``paper`` (the printed
    window loss of the tuned values) and Table 6's values for ``task``."""

    name: str
    title: str
    task: str
    optimizers: tuple[str, ...]
    schedule: str
    studies: Mapping[str, int]
    seeds: Mapping[str, int]
    paper: Mapping[str, PaperValue]


@dataclass(frozen=True)
class Experiment:
    """One of the paper's experiments.

    ``tasks``: the task to run, or several to try in order (the first whose data is present runs;
    a later one is a stand-in, said so). ``table6_task``: the task whose Table 6 rows give the
    values (and whose schedule halves them, §3.5). ``steps``/``seeds`` per scale. ``quantity``:
    the run's window loss (``window_loss``) or a final metric (``test_loss``). ``relative_to``:
    compare ratios to this optimizer instead of absolute values. ``metric_every``: sample the
    task metrics during training (the bowl's Hessian-approximation error, every 100 evaluations
    as the authors' code does).
    """

    name: str
    title: str
    tasks: tuple[str, ...]
    table6_task: str
    optimizers: tuple[str, ...]
    steps: Mapping[str, int]
    seeds: Mapping[str, int]
    paper: Mapping[str, PaperValue]
    quantity: Literal["window_loss", "test_loss"] = "window_loss"
    relative_to: str | None = None
    metric_every: int | None = None
    paper_scale_needs_gpu: bool = False
    reasons: Mapping[str, str] = field(default_factory=dict)  # optimizer → why it differs
    task_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per scale
    skipped: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # scale → optimizer → why

    def running(self, scale: str) -> list[str]:
        """The optimizers that run at ``scale`` (those not skipped there)."""
        return [name for name in self.optimizers if name not in self.skipped.get(scale, {})]


_TABLE1_LOST = "Table 1's entries were lost in extraction (lodo.md §5.2), all but Newton's 7.41"
_TABLE4_LOST = "Table 4 has no surviving numbers (lodo.md §5.2)"
_TABLE2 = "Table 2: test loss of one run at 300 k steps"
_TABLE3 = "Table 3: test loss of one run at 300 k steps"

_TABLE8 = "Table 8"
EXPERIMENTS: dict[str, Experiment | StudiesExperiment] = {
    e.name: e
    for e in (
        Experiment(
            name="rosenbrock",
            title="Rescaled Rosenbrock: Table 8, mean loss over evaluations 181–199",
            tasks=("rosenbrock",),
            table6_task="rosenbrock",
            optimizers=("adam", "momentum", "rmsprop", "yogi", "lodo"),
            steps={"quick": 200, "paper": 200},
            seeds={"quick": 8, "paper": 8},
            paper={
                "adam": PaperValue(0.00005342, table=_TABLE8),
                "momentum": PaperValue(0.01397, table=_TABLE8),
                "rmsprop": PaperValue(0.0008967, table=_TABLE8),
                "yogi": PaperValue(0.0007916, table=_TABLE8),
                "lodo": PaperValue(0.001040, 0.00002140, table=_TABLE8),
            },
            reasons={
                "momentum": (
                    "Table 8's 0.01397 is a misprint: Table 6's values give 0.0001359 in an "
                    "independent Keras-semantics computation (tests/tuner/test_fidelity.py)"
                ),
                "rmsprop": (
                    "Table 6's RMSprop learning rates are a best guess (only 0.449 and 0.004318 survive "
                    "extraction, assigned to the bowl and Rosenbrock), and with ρ ≪ 1 RMSprop is chaotic "
                    "on Rosenbrock: a small change in a value moves the window loss by a factor"
                ),
            },
        ),
        StudiesExperiment(
            name="rosenbrock-ga",
            title="Rescaled Rosenbrock tuned by the GA: independent studies against Tables 6 and 8",
            task="rosenbrock",
            optimizers=("lodo", "adam"),
            schedule="paper",
            studies={"quick": 3, "paper": 8},
            seeds={"quick": 8, "paper": 8},
            paper={
                "adam": PaperValue(0.00005342, table=_TABLE8),
                "lodo": PaperValue(0.001040, 0.00002140, table=_TABLE8),
            },
        ),
        Experiment(
            name="bowl",
            title="Noisy quadratic bowl: training loss over the last 10 % of M evaluations",
            tasks=("noisy-quadratic-bowl",),
            table6_task="noisy-quadratic-bowl",
            optimizers=("adam", "momentum", "rmsprop", "yogi", "lbfgs", "olbfgs", "lodo"),
            steps={"quick": 3_000, "paper": 100_000},
            seeds={"quick": 4, "paper": 8},
            paper={
                "newton": PaperValue(7.41, table="Table 1"),
                **{
                    name: PaperValue(None, table="Table 1", lost=_TABLE1_LOST)
                    for name in ("adam", "momentum", "rmsprop", "yogi", "lbfgs", "olbfgs", "lodo")
                },
            },
            metric_every=100,
        ),
        Experiment(
            name="image-generation",
            title="Autoregressive image generation: Tables 2 and 3, test loss, as ratios to LODO",
            tasks=("mnist-autoregression", "digits-autoregression"),
            table6_task="mnist-autoregression",
            optimizers=(
                "adam",
                "momentum",
                "rmsprop",
                "yogi",
                "lars",
                "lodo",
                "lodo-diagonal",
                "lodo-global",
                "lodo-residuals",
                "lodo-sgd",
                "lodo-no-momentum",
            ),
            steps={"quick": 60, "paper": 300_000},
            seeds={"quick": 2, "paper": 8},
            # quick: a smaller minibatch and test subset, so the CPU run takes a minute or two
            task_options={"quick": {"batch_size": 64, "metric_images": 100}},
            skipped={
                "quick": {
                    name: (
                        f"skipped at quick scale: its CPU step here takes {per_step} (LODO's: 0.12 s; "
                        "measured at 2 members, batch 64); run it with --scale paper on a GPU"
                    )
                    for name, per_step in (
                        ("lodo-residuals", "~6 s"),
                        ("lodo-sgd", "1.7 s"),
                        ("lodo-no-momentum", "0.8 s"),
                    )
                }
            },
            paper={
                "adam": PaperValue(0.809, table=_TABLE2),
                "momentum": PaperValue(0.689, table=_TABLE2),
                "rmsprop": PaperValue(0.931, table=_TABLE2),
                "yogi": PaperValue(0.686, table=_TABLE2),
                "lars": PaperValue(0.688, table=_TABLE2),
                "lodo": PaperValue(0.689, table=_TABLE2),
                "lodo-diagonal": PaperValue(math.inf, table=_TABLE3 + " (diverged)"),
                "lodo-global": PaperValue(0.747, table=_TABLE3),
                "lodo-residuals": PaperValue(0.693, table=_TABLE3),
                "lodo-sgd": PaperValue(0.698, table=_TABLE3),
                "lodo-no-momentum": PaperValue(0.750, table=_TABLE3),
            },
            quantity="test_loss",
            relative_to="lodo",
            paper_scale_needs_gpu=True,
        ),
        Experiment(
            name="resnet",
            title="ResNet-18 on CIFAR-10: training loss over the last 10 % of M evaluations",
            tasks=("resnet18-cifar10",),
            table6_task="resnet18-cifar10",
            optimizers=("adam", "momentum", "rmsprop", "yogi", "lars", "lodo"),
            steps={"quick": 20, "paper": 3_000},
            seeds={"quick": 2, "paper": 8},
            paper={
                name: PaperValue(None, table="Table 4", lost=_TABLE4_LOST)
                for name in ("adam", "momentum", "rmsprop", "yogi", "lars", "lodo")
            },
            paper_scale_needs_gpu=True,
        ),
    )
}


def check_experiments(names: Sequence[str] | None) -> list[str]:
    """The experiments to run, in the registry's order (all when ``names`` is empty)."""
    if not names:
        return list(EXPERIMENTS)
    for name in names:
        if name not in EXPERIMENTS:
            raise invalid("experiments", name, " | ".join(EXPERIMENTS))
    return [name for name in EXPERIMENTS if name in names]


def check_scale(scale: object) -> Scale:
    if scale not in SCALES:
        raise invalid("scale", scale, " | ".join(SCALES))
    return scale  # type: ignore[return-value]


class ReproduceJob(BaseModel):
    """A reproduce job (``lodotune reproduce``, ``POST /reproduce``): what :func:`reproduce` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: list[str] = Field(
        default_factory=list,
        validate_default=True,  # empty: every experiment, named in the stored spec
        max_length=16,
        description="Experiments to run (GET /experiments); empty: all of them.",
        examples=[["rosenbrock", "bowl"]],
    )
    scale: Scale = Field("quick", description="quick (minutes on a laptop) or paper (the paper's lengths).")
    seeds: int | None = Field(None, ge=1, le=256, strict=True, description="Runs per optimizer.")
    studies: int | None = Field(
        None, ge=1, le=MAX_STUDIES, strict=True, description="GA studies per optimizer of rosenbrock-ga."
    )
    device: Device = "cpu"
    vectorize: Vectorize = "auto"

    @field_validator("experiments")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        return check_experiments(names)


def describe_experiments() -> list[dict[str, Any]]:
    """The registry for people and the service: each experiment's task(s), optimizers, and per
    scale its seeds and steps (a studies experiment: its studies and GA schedule)."""
    records = []
    for name, e in EXPERIMENTS.items():
        record: dict[str, Any] = {"name": name, "title": e.title, "optimizers": list(e.optimizers)}
        if isinstance(e, StudiesExperiment):
            record |= {"tasks": [e.task], "schedule": e.schedule, "studies": dict(e.studies)}
        else:
            record |= {"tasks": list(e.tasks), "steps": dict(e.steps)}
            record["skipped"] = {scale: sorted(names) for scale, names in e.skipped.items()}
        record["seeds"] = dict(e.seeds)
        records.append(record)
    return records


def studies_jobs(
    experiment: StudiesExperiment,
    *,
    scale: Scale,
    seeds: int | None = None,
    studies: int | None = None,
    device: str = "cpu",
    vectorize: str = "auto",
) -> dict[str, TuneJob]:
    """Optimizer → the tune job of K GA studies a studies experiment runs for it."""
    return {
        name: TuneJob(
            task=experiment.task,
            optimizer=name,
            strategy_options={"schedule": experiment.schedule},
            seeds=seeds or experiment.seeds[scale],
            studies=studies or experiment.studies[scale],
            device=device,
            vectorize=vectorize,
        )
        for name in experiment.optimizers
    }


def verdict(paper: PaperValue, ours: float | None, std: float | None, *, deterministic: bool) -> Verdict:
    """The verdict of one row (see the module docstring)."""
    if paper.value is None:
        return "no paper value"
    if ours is None or not math.isfinite(ours) or not math.isfinite(paper.value):
        # a paper "diverged" and ours diverging too is a match of outcomes
        same = (ours is None or not math.isfinite(ours)) and not math.isfinite(paper.value)
        return "match" if same else "differs"
    if deterministic and abs(ours / paper.value - 1) <= MATCH_REL:
        return "match"
    spread = paper.std if paper.std else std
    if spread and abs(ours - paper.value) <= SPREAD_STDS * spread:
        return "within spread"
    return "differs"


def _chosen_task(experiment: Experiment, scale: Scale, device: str) -> tuple[str | None, str | None]:
    """The task that runs and a note (a stand-in, said so), or None and why nothing runs."""
    if scale == "paper" and experiment.paper_scale_needs_gpu and not device.startswith("cuda"):
        return None, f"paper scale ({experiment.steps['paper']:,} steps) needs a GPU: run with --device cuda"
    missing = []
    for task in experiment.tasks:
        try:
            tasks.build(task, seed=0, device="cpu")
        except FileNotFoundError as err:
            missing.append(f"{task}: {err}")
            continue
        if task != experiment.tasks[0]:
            return task, f"stand-in: {task} for {experiment.tasks[0]}, whose data is not here"
        return task, None
    return None, "no data: " + "; ".join(missing)


def _quantity(entry: Mapping[str, Any], quantity: str) -> tuple[float | None, float | None, list[float]]:
    """Mean, population std and the per-run values of ``quantity`` over an optimizer's ok runs."""
    if quantity == "window_loss":
        values = [
            r["window_mean"] for r in entry["per_run"] if r["status"] == "ok" and r["window_mean"] is not None
        ]
    else:
        values = [
            r["metrics"][quantity]
            for r in entry["per_run"]
            if r["status"] == "ok" and quantity in r["metrics"]
        ]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None, None, []
    return statistics.fmean(values), statistics.pstdev(values), values


def _differs_because(experiment: Experiment, name: str, notes: Sequence[str]) -> str:
    """The known reason a row differs: the optimizer's, else the experiment's stand-in dataset or
    shorter scale (``notes``, said above the table), else "unexplained"."""
    if name in experiment.reasons:
        return experiment.reasons[name]
    causes = [
        cause
        for word, cause in (("stand-in", "the stand-in dataset"), ("scale", "the shorter scale"))
        if any(word in note for note in notes)
    ]
    return " or ".join(causes) + " (see above the table)" if causes else "unexplained"


def _row(
    experiment: Experiment, name: str, entry: Mapping[str, Any] | None, notes: list[str]
) -> dict[str, Any]:
    """One optimizer's row; ``notes``: what holds for the whole experiment (a stand-in, the
    scale), given as the reason of a row that differs without one of its own."""
    paper = experiment.paper.get(name, PaperValue(None, lost="not in the paper's tables"))
    row: dict[str, Any] = {
        "experiment": experiment.name,
        "optimizer": name,
        "paper": paper.value if paper.value is None or math.isfinite(paper.value) else "diverged",
        "paper_std": paper.std,
        "paper_table": paper.table,
        "ours": None,
        "std": None,
        "runs": 0,
        "diverged": 0,
        "errors": 0,
        "ratio": None,
        "verdict": "not run",
        "note": "; ".join(notes),
    }
    if entry is None:
        return row  # notes: why it did not run
    mean, std, values = _quantity(entry, experiment.quantity)
    row |= {
        "ours": mean,
        "std": std,
        "runs": entry["runs"],
        "diverged": entry["diverged"],
        "errors": entry["errors"],
        "hyperparameters": entry["hyperparameters"],
        "value_sources": entry["value_sources"],
        "source": entry["source"],
    }
    if paper.value is not None and math.isfinite(paper.value) and mean is not None:
        row["ratio"] = mean / paper.value
    deterministic = len(values) > 1 and len(set(values)) == 1
    row["verdict"] = verdict(paper, mean, std, deterministic=deterministic)
    reasons = []
    if paper.lost:
        reasons.append(paper.lost)
    if row["verdict"] == "differs":
        reasons.append(_differs_because(experiment, name, notes))
    if entry["error"]:
        reasons.append(f"first error: {entry['error']}")
    row["note"] = "; ".join(reasons)
    return row


def _relative_rows(
    experiment: Experiment, rows: list[dict[str, Any]], values: dict[str, list[float]], notes: list[str]
) -> None:
    """Image generation: each row's ratio to the reference optimizer's mean, ours beside the
    paper's; the verdict compares those ratios (the std of ours propagated from the runs)."""
    reference = next((r for r in rows if r["optimizer"] == experiment.relative_to), None)
    base = experiment.paper[experiment.relative_to].value
    if reference is None or reference["ours"] is None or base is None:
        return
    for row in rows:
        paper = experiment.paper.get(row["optimizer"])
        if row["ours"] is None or paper is None or paper.value is None:
            continue
        ours = [v / reference["ours"] for v in values[row["optimizer"]]]
        ratio = statistics.fmean(ours)
        paper_ratio = paper.value / base
        row["ratio_to_" + experiment.relative_to] = {"ours": ratio, "paper": paper_ratio}
        row["ratio"] = ratio / paper_ratio if math.isfinite(paper_ratio) else None
        relative = PaperValue(paper_ratio)
        row["verdict"] = verdict(relative, ratio, statistics.pstdev(ours), deterministic=False)
        reasons = [f"compared as the ratio to {experiment.relative_to}"]
        if row["optimizer"] == experiment.relative_to:
            row["verdict"] = "match"
            reasons = ["the reference: its ratio is 1 by construction"]
        if row["verdict"] == "differs":
            reasons.append(_differs_because(experiment, row["optimizer"], notes))
        if row["errors"]:
            reasons += [n for n in row["note"].split("; ") if n.startswith("first error")]
        row["note"] = "; ".join(reasons)


def _scale_note(experiment: Experiment, scale: Scale, steps: int) -> str | None:
    paper_steps = experiment.steps["paper"]
    if steps == paper_steps:
        return None
    return f"{scale} scale: {steps:,} evaluations where the paper runs {paper_steps:,}"


def _bowl_checks(
    rows: list[dict[str, Any]], document: Mapping[str, Any], printed: PaperValue
) -> tuple[dict[str, Any], list[str]]:
    """The bowl's surviving claims: Newton's optimum ½σ²tr(H) (a row against ``printed``, Table 1's
    7.41), every optimizer above it, LODO best of the practical optimizers."""
    optimal = next(
        (
            r["metrics"]["optimal_loss"]
            for e in document["optimizers"].values()
            for r in e["per_run"]
            if r["metrics"]
        ),
        None,
    )
    newton = {
        "experiment": "bowl",
        "optimizer": "newton",
        "paper": printed.value,
        "paper_std": None,
        "paper_table": printed.table,
        "ours": optimal,
        "std": 0.0,
        "runs": 0,
        "diverged": 0,
        "errors": 0,
        "ratio": None if optimal is None else optimal / printed.value,
        "verdict": verdict(printed, optimal, 0.0, deterministic=True),
        "note": "analytic, ½σ²·tr(H) (not a run); the paper prints it to 3 digits",
    }
    ran = [r for r in rows if r["ours"] is not None]
    checks = []
    if optimal is not None:
        below = [r["optimizer"] for r in ran if r["ours"] < optimal]
        checks.append(
            f"every optimizer above the Newton optimum {optimal:.4f}: "
            + ("yes" if not below else f"no ({', '.join(below)} below it)")
        )
    ranked = sorted(ran, key=lambda r: r["ours"])
    if ranked:
        best = ranked[0]["optimizer"]
        checks.append(
            "LODO best of the practical optimizers (the paper's claim): "
            + (
                "yes"
                if best == "lodo"
                else f"no ({best} lower; ranking: {', '.join(r['optimizer'] for r in ranked)})"
            )
        )
    return newton, checks


def run_experiment(
    experiment: Experiment,
    out: Path,
    *,
    scale: Scale,
    seeds: int | None,
    runtime: Runtime,
    device: str = "cpu",
    vectorize: str = "auto",
    emit: Callable[[ev.Event], None] = ev.ignore,
) -> dict[str, Any]:
    """Run one experiment into ``out/<name>``; returns its section of the report."""
    steps = experiment.steps[scale]
    runs = seeds or experiment.seeds[scale]
    section: dict[str, Any] = {"title": experiment.title, "steps": steps, "seeds": runs, "plots": {}}
    task, why = _chosen_task(experiment, scale, device)
    section |= {"task": task, "status": "not run" if task is None else "ran", "notes": []}
    if task is None:
        section["reason"] = why
        section["rows"] = [_row(experiment, name, None, [why]) for name in experiment.optimizers]
        return section
    schedule = schedules.schedule_for(experiment.table6_task)
    skipped = experiment.skipped.get(scale, {})
    running = experiment.running(scale)
    options = dict(experiment.task_options.get(scale, {}))
    section["task_options"] = options
    plan = EvaluationPlan(
        task,
        {name: paper_entry(experiment.table6_task, name, schedule=schedule) for name in running},
        steps=steps,
        step_scale=1.0,
        seeds=runs,
        job_seed=0,
        device=device,
        task_options=options,
        metric_every=experiment.metric_every,
    )
    root = out / experiment.name
    ctx = JobContext(RunDir(root), runtime, emit=emit, resume=True, vectorize=vectorize)
    try:
        document = run_plan(plan, ctx)
    finally:
        ctx.close()
    notes = [n for n in (why, _scale_note(experiment, scale, steps)) if n]
    section["notes"] = notes
    rows = [
        _row(
            experiment, name, document["optimizers"].get(name), [skipped[name]] if name in skipped else notes
        )
        for name in experiment.optimizers
    ]
    if experiment.relative_to:
        values = {name: _quantity(document["optimizers"][name], experiment.quantity)[2] for name in running}
        _relative_rows(experiment, rows, values, notes)
    section["plots"]["curves"] = str((ctx.evaluation_path / "curves.png").relative_to(out))
    section["results"] = str((ctx.evaluation_path / "results.json").relative_to(out))
    if experiment.name == "bowl":
        newton, section["checks"] = _bowl_checks(rows, document, experiment.paper["newton"])
        rows.insert(0, newton)
        trace = plots.plot_hessian_error(document, root / "hessian_error.png")
        if trace is not None:
            section["hessian_error"] = trace
            section["plots"]["hessian_error"] = f"{experiment.name}/hessian_error.png"
    section["rows"] = rows
    return section


def studies_verdict(paper: PaperValue, losses: Mapping[str, Any]) -> Verdict:
    """Whether the paper's value lies inside the studies' spread ``losses`` (:func:`tuner.summary.spread`):
    their range, widened by :data:`SPREAD_STDS` of the paper's std where it prints one."""
    if paper.value is None:
        return "no paper value"
    if not losses["n"]:
        return "differs"
    margin = SPREAD_STDS * (paper.std or 0.0)
    inside = losses["min"] - margin <= paper.value <= losses["max"] + margin
    return "within spread" if inside else "differs"


def _studies_row(
    experiment: StudiesExperiment, name: str, documents: Mapping[str, Any], run_dir: str
) -> dict[str, Any]:
    """One optimizer's row: the median study's window loss, the studies' spread, the verdict on
    the spread, and its tuned values beside Table 6's."""
    paper = experiment.paper[name]
    studies, tuned = documents["studies"], documents["hyperparameters"]
    losses = studies["spread"]["window_loss"]
    median = studies["per_study"][studies["median_study"]]
    per_study = [s["window_loss"]["mean"] for s in studies["per_study"]]
    table6 = schedules.paper_entry(experiment.task, name)
    values = {
        hp: {
            "tuned": value,
            "table6": table6.values[hp],
            "table6_source": table6.sources[hp],
            "studies": [s["hyperparameters"][hp] for s in studies["per_study"]],
        }
        for hp, value in tuned["hyperparameters"].items()
    }
    row = {
        "experiment": experiment.name,
        "optimizer": name,
        "paper": paper.value,
        "paper_std": paper.std,
        "paper_table": paper.table,
        "ours": median["window_loss"]["mean"],
        "std": median["window_loss"]["std"],
        "runs": median["runs"],
        "diverged": median["diverged"],
        "errors": median["errors"],
        "ratio": None
        if median["window_loss"]["mean"] is None
        else median["window_loss"]["mean"] / paper.value,
        "verdict": studies_verdict(paper, losses),
        "hyperparameters": dict(tuned["hyperparameters"]),
        "source": f"tuned: median of {studies['studies']} GA studies "
        f"(study {median['study']}, seed {median['seed']})",
        "studies": {
            "count": studies["studies"],
            "median_study": median["study"],
            "window_loss": losses,
            "per_study": per_study,
            "run_dir": run_dir,
        },
        "table6": values,
    }
    below = sum(1 for v in per_study if v is not None and v <= paper.value)
    lo, hi = _number(losses["min"]), _number(losses["max"])
    where = f"{below} of {len(per_study)} studies at or below the paper's value; studies' range {lo}–{hi}"
    row["note"] = where if row["verdict"] != "differs" else f"{where}: unexplained"
    return row


def run_studies_experiment(
    experiment: StudiesExperiment,
    out: Path,
    *,
    scale: Scale,
    seeds: int | None,
    studies: int | None,
    runtime: Runtime,
    device: str = "cpu",
    vectorize: str = "auto",
    emit: Callable[[ev.Event], None] = ev.ignore,
) -> dict[str, Any]:
    """Tune each optimizer in ``experiment.studies`` (or ``studies``) GA studies into
    ``out/<name>/<optimizer>-<K>-studies`` (a rerun resumes them) and return the report's section."""
    jobs = studies_jobs(
        experiment, scale=scale, seeds=seeds, studies=studies, device=device, vectorize=vectorize
    )
    count = studies or experiment.studies[scale]
    section: dict[str, Any] = {
        "title": experiment.title,
        "task": experiment.task,
        "status": "ran",
        "studies": count,
        "seeds": seeds or experiment.seeds[scale],
        "steps": schedules.schedule_for(experiment.task, experiment.schedule).final_steps,
        "notes": [
            f"GA with the {experiment.schedule} schedule (Table 5), job seed 0, {count} studies per "
            "optimizer; verdict: the paper's value inside the studies' range (± 3 of its std)"
        ],
        "plots": {},
    }
    rows = []
    for name, job in jobs.items():
        root = out / experiment.name / f"{name}-{count}-studies"
        ctx = JobContext(RunDir(root), runtime, emit=emit, resume=(root / "config.json").exists())
        documents = run_tune_job(job, ctx)
        rows.append(_studies_row(experiment, name, documents, str(root.relative_to(out))))
        section["plots"][f"{name} search"] = str((root / "search.png").relative_to(out))
    section["rows"] = rows
    return section


def reproduce(
    out: Path,
    *,
    experiments: Sequence[str] | None = None,
    scale: Scale = "quick",
    seeds: int | None = None,
    studies: int | None = None,
    runtime: Runtime = LOCAL,
    device: str = "cpu",
    vectorize: str = "auto",
    emit: Callable[[ev.Event], None] = ev.ignore,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the experiments and write ``out/report.json`` and ``out/report.md``; returns the report.

    ``seeds``: runs per optimizer (default: each experiment's at this scale); ``studies``: GA
    studies per optimizer of a studies experiment (default: its at this scale); ``vectorize`` as
    for any evaluation (``auto``: every supported optimizer's seeds as one population). Finished runs in
    ``out`` are reused, so a killed run continues where it stopped.
    """
    names = check_experiments(experiments)
    scale = check_scale(scale)
    vectorize = check_vectorize(vectorize)
    if seeds is not None and not (isinstance(seeds, int) and 1 <= seeds <= 256):
        raise invalid("seeds", seeds, "an integer in 1..256")
    if studies is not None and not (isinstance(studies, int) and 1 <= studies <= MAX_STUDIES):
        raise invalid("studies", studies, f"an integer in 1..{MAX_STUDIES}")
    out.mkdir(parents=True, exist_ok=True)
    sections = {}
    for name in names:
        experiment = EXPERIMENTS[name]
        log(f"{name}: {experiment.title}")
        common = dict(
            scale=scale, seeds=seeds, runtime=runtime, device=device, vectorize=vectorize, emit=emit
        )
        if isinstance(experiment, StudiesExperiment):
            sections[name] = run_studies_experiment(experiment, out, studies=studies, **common)
        else:
            sections[name] = run_experiment(experiment, out, **common)
    report = {
        "scale": scale,
        "device": device,
        "versions": versions(),
        "verdicts": {
            "match": f"deterministic, within {MATCH_REL:.0%} of the paper",
            "within spread": f"within {SPREAD_STDS:g} of the paper's std (ours where it prints none)",
            "differs": "neither; the note gives the known reason, or 'unexplained'",
            "no paper value": "the paper's number was lost in extraction",
            "not run": "the experiment could not run here; the note says why",
        },
        "experiments": {name: {k: v for k, v in s.items() if k != "rows"} for name, s in sections.items()},
        "rows": [row for s in sections.values() for row in s["rows"]],
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))
    return report


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _shared_notes(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """The notes every row of an experiment carries (said once, above its table), of the rows that
    ran where any did (the bowl's analytic Newton row has a note of its own)."""
    notes = [set(r["note"].split("; ")) - {""} for r in ([r for r in rows if r["runs"]] or rows)]
    return set.intersection(*notes) if notes else set()


def _tuned_values_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A studies experiment's tuned values: the median study's and every study's range beside
    Table 6's."""
    lines = [
        "| optimizer | hyperparameter | Table 6 | tuned (median study) | studies' range |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        for name, value in row["table6"].items():
            source = "" if value["table6_source"] == "paper Table 6" else f" ({value['table6_source']})"
            lo, hi = min(value["studies"]), max(value["studies"])
            lines.append(
                f"| {row['optimizer']} | {name} | {value['table6']:.6g}{source} | {value['tuned']:.6g} "
                f"| {lo:.6g}–{hi:.6g} |"
            )
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """The report for people: one table per experiment, the checks and plots below it."""
    lines = [
        f"# lodotune reproduce ({report['scale']} scale, {report['device']})",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
        "Verdicts: " + "; ".join(f"**{k}**: {v}" for k, v in report["verdicts"].items()) + ".",
    ]
    for name, section in report["experiments"].items():
        rows = [r for r in report["rows"] if r["experiment"] == name]
        shared = _shared_notes(rows)
        lines += ["", f"## {section['title']}", ""]
        if section["status"] == "not run":
            lines += [f"Not run: {section['reason']}"]
        else:
            studies = f"{section['studies']} GA studies, each evaluated over " if "studies" in section else ""
            runs = f"{section['seeds']} seeds × {section['steps']:,} evaluations"
            lines += [f"Task `{section['task']}`, {studies}{runs}."]
            lines += [f"{note[0].upper()}{note[1:]}." for note in section["notes"]]
            lines += [f"All rows: {note}." for note in sorted(shared)]
        lines += [
            "",
            "| optimizer | paper | ours (mean ± std) | diverged | ratio | verdict | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            paper = _number(row["paper"]) + (f" ± {row['paper_std']:.3g}" if row["paper_std"] else "")
            spread = f" ± {row['std']:.2g}" if row["ours"] is not None and row["std"] else ""
            relative = row.get("ratio_to_lodo")
            ratio = (
                f"{relative['ours']:.3g} vs {relative['paper']:.3g}" if relative else _number(row["ratio"])
            )
            diverged = f"{row['diverged']}/{row['runs']}" if row["runs"] else "–"
            note = "; ".join(n for n in row["note"].split("; ") if n not in shared)
            lines.append(
                f"| {row['optimizer']} | {paper} | {_number(row['ours'])}{spread} | {diverged} | {ratio} "
                f"| {row['verdict']} | {note} |"
            )
        if any(r.get("ratio_to_lodo") for r in rows):
            lines += ["", "ratio: ours to LODO vs the paper's to LODO."]
        if any("studies" in r for r in rows):
            lines += ["", "ours: the median study's window loss over the seeds.", ""]
            lines += _tuned_values_table(rows)
        lines += [""] + [f"* {check}" for check in section.get("checks", [])]
        lines += [f"![{name} {label}]({path})" for label, path in section.get("plots", {}).items()]
    return "\n".join(lines) + "\n"
