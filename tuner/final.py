"""The final evaluation: which values run (and where each one came from), for how long, with which
task options — after tuning, and for an evaluation job — and running that plan.

Every value carries its source: ``tuned``, ``given``, ``paper Table 6``, ``default``,
``default (Table 6 lost)``, ``default (not in Table 6)``, ``default (not tuned)``, each with
`` (halved)`` where the image-generation rule (lodo.md §3.5) halved it. Table 6 holds the values
before that halving (§3.8), so Table 6 values are halved as the paper's final runs had them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lodo
import schedules

from . import events as ev
from .evaluate import evaluate, own_settings
from .rundir import write_json
from .summary import bootstrap_summary
from .tables import Summary
from .trial import AllTrialsFailed

if TYPE_CHECKING:
    from .runtime import JobContext
    from .specs import EvaluateJob, TuneJob

BOOTSTRAP_RESAMPLES = 50  # clarke.md §2.4


def final_length(task: str, step_scale: float) -> int:
    """The task's final-evaluation length (its GA schedule's M), scaled."""
    return max(2, round(schedules.schedule_for(task).final_steps * step_scale))


def optimizer_options(name: str, meta_dtype: str | None) -> dict[str, str]:
    """The registry options a job's ``meta_dtype`` sets on optimizer ``name`` (only those taking it)."""
    return {"meta_dtype": meta_dtype} if meta_dtype and "meta_dtype" in lodo.get(name).options else {}


@dataclass(frozen=True)
class Entry:
    """One optimizer's values for the final runs: ``source`` in one line, ``value_sources`` each."""

    values: dict[str, float]
    source: str
    value_sources: dict[str, str]


def _halved(schedule: schedules.Schedule | None, name: str, entry: Entry) -> Entry:
    """The entry with its learning rate halved where ``schedule`` says (§3.5): the rule is for the
    values the paper tuned, so a default standing in for a lost or untuned value is left alone."""
    rule = schedules.halved_names(schedule, name) if schedule is not None else ()
    names = [k for k in rule if not entry.value_sources[k].startswith("default")]
    if not names:
        return entry
    values = {k: v / 2 if k in names else v for k, v in entry.values.items()}
    return Entry(
        values,
        f"{entry.source} (halved)",
        {k: f"{s} (halved)" if k in names else s for k, s in entry.value_sources.items()},
    )


def defaults_entry(name: str, source: str = "defaults", value_source: str = "default") -> Entry:
    defaults = lodo.get(name).defaults
    return Entry(defaults, source, dict.fromkeys(defaults, value_source))


def paper_entry(task: str, name: str, *, schedule: schedules.Schedule | None = None) -> Entry:
    """Table 6's values (ValueError when the paper has no row), each lost or unlisted value at its
    default and named so in ``source``; halved where ``schedule`` says."""
    row = schedules.paper_entry(task, name)
    stand_ins = [f"{k}: {s}" for k, s in row.sources.items() if s != "paper Table 6"]
    source = "paper Table 6" + (f" ({'; '.join(stand_ins)})" if stand_ins else "")
    return _halved(schedule, name, Entry(dict(row.values), source, dict(row.sources)))


def reference_entry(
    task: str, name: str, tuned: str = "paper", *, schedule: schedules.Schedule | None = None
) -> Entry:
    """An optimizer a tune job did not tune: Table 6's values where the paper has a row (unless
    ``tuned="defaults"``), else the registry defaults, said so."""
    if tuned == "paper":
        try:
            return paper_entry(task, name, schedule=schedule)
        except ValueError:
            return defaults_entry(
                name, f"defaults (no Table 6 row for {task}/{name})", "default (no Table 6 row)"
            )
    return defaults_entry(name)


def tuned_entry(document: Mapping[str, Any], source: str) -> Entry:
    """A ``hyperparameters.json``'s values for the final runs: a GA result halved as its schedule
    says (§3.5), an ASHA or one-pass result as it is; a value the strategy did not tune is the
    default, said so."""
    name = document["optimizer"]
    spec = lodo.get(name)
    tuned = dict(document["hyperparameters"])
    entry = Entry(
        spec.check_values(tuned),
        source,
        {k: source if k in tuned else "default (not tuned)" for k in spec.names},
    )
    if document.get("strategy", "ga") != "ga":
        return entry
    return _halved(schedules.Schedule.model_validate(document["schedule"]), name, entry)


def given_entry(name: str, values: Mapping[str, float]) -> Entry:
    spec = lodo.get(name)
    return Entry(
        spec.check_values(values), "given", {k: "given" if k in values else "default" for k in spec.names}
    )


@dataclass(frozen=True)
class EvaluationPlan:
    """The arguments of :func:`tuner.evaluate.evaluate`: N seeds of every entry."""

    task: str
    entries: dict[str, Entry]
    steps: int
    step_scale: float
    seeds: int
    job_seed: int
    device: str = "cpu"
    task_options: dict[str, Any] = field(default_factory=dict)
    meta_dtype: str | None = None
    metric_every: int | None = None  # sample the task metrics during training (lodotune reproduce)
    # an optimizer's own length and task options (an ASHA job's: one budget, each its batch size)
    entry_steps: dict[str, int] = field(default_factory=dict)
    entry_task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, Any] | None = None  # what the lengths were derived from (ASHA's budget)


def plan_after_tuning(
    job: TuneJob,
    document: Mapping[str, Any],
    *,
    schedule: schedules.Schedule | None,
    steps: int,
    step_scale: float,
    task_options: dict[str, Any],
) -> EvaluationPlan:
    """The tuned values (:func:`tuned_entry`) and the job's baselines (:func:`reference_entry`,
    halved where ``schedule`` says; None: nothing halved, the AdamQLR paper's protocol)."""
    entries = {job.optimizer: tuned_entry(document, "tuned")}
    for name in job.baselines:
        entries.setdefault(name, reference_entry(job.task, name, schedule=schedule))
    return EvaluationPlan(
        job.task,
        entries,
        steps=steps,
        step_scale=step_scale,
        seeds=job.seeds,
        job_seed=job.seed,
        device=job.device,
        task_options=task_options,
        meta_dtype=job.meta_dtype,
    )


def plan_for(
    job: EvaluateJob, tuned: Mapping[str, Any] | None = None, tuned_source: str = "tuned"
) -> EvaluationPlan:
    """An evaluation job's plan: given values as they are, ``tuned``'s (a run's hyperparameters
    document) for its optimizer, Table 6's or the defaults for the others (as ``job.tuned``).

    Table 6 values for an optimizer the paper has no row for are refused (a ValueError that says
    what to give instead); the task options are the job's, else those of ``tuned``'s run on the
    same task (the batch size ASHA tuned).
    """
    tuned_optimizer = tuned["optimizer"] if tuned is not None else None
    final_runs = schedules.schedule_for(job.task)
    entries = {}
    for name in job.optimizers:
        if name in job.hyperparameters:
            entries[name] = given_entry(name, job.hyperparameters[name])
        elif name == tuned_optimizer:
            entries[name] = tuned_entry(tuned, tuned_source)
        elif job.tuned == "paper":
            try:
                entries[name] = paper_entry(job.task, name, schedule=final_runs)
            except ValueError as err:
                raise ValueError(f"{err}; give its hyperparameters or tuned='defaults'") from None
        else:
            entries[name] = defaults_entry(name)
    task_options = dict(job.task_options)
    if not task_options and tuned is not None and tuned.get("task") == job.task:
        task_options = dict(tuned.get("task_options") or {})
    return EvaluationPlan(
        job.task,
        entries,
        steps=job.length(),
        step_scale=job.step_scale,
        seeds=job.seeds,
        job_seed=job.seed,
        device=job.device,
        task_options=task_options,
        meta_dtype=job.meta_dtype,
    )


def run_plan(plan: EvaluationPlan, ctx: JobContext, *, bootstrap: bool = False) -> dict[str, Any]:
    """Run the plan through the job's executor into ``RUN_DIR/evaluation``; with ``bootstrap``, add
    the AdamQLR paper's bootstrap medians (§2.4) as ``"bootstrap"`` (also ``bootstrap.json``)."""
    total = len(plan.entries) * plan.seeds
    ctx.emit(ev.PhaseStarted("evaluation", "final", total, "runs"))
    out_dir = ctx.evaluation_path

    def on_run(index: int, result) -> None:
        spec = result.spec
        ctx.emit(
            ev.EvaluationRunFinished(index, total, spec.optimizer, spec.seed, result.status, result.error)
        )

    document = evaluate(
        plan.task,
        {name: entry.values for name, entry in plan.entries.items()},
        steps=plan.steps,
        seeds=plan.seeds,
        executor=ctx.executor(),
        out_dir=out_dir,
        job_seed=plan.job_seed,
        task_options=plan.task_options,
        device=plan.device,
        step_scale=plan.step_scale,
        sources={name: entry.source for name, entry in plan.entries.items()},
        value_sources={name: entry.value_sources for name, entry in plan.entries.items()},
        optimizer_options={name: optimizer_options(name, plan.meta_dtype) for name in plan.entries},
        progress=on_run,
        metric_every=plan.metric_every,
        entry_steps=plan.entry_steps,
        entry_task_options=plan.entry_task_options,
    )
    if plan.budget is not None:
        document["budget"] = plan.budget
    runs = [run for entry in document["optimizers"].values() for run in entry["per_run"]]
    if all(run["status"] == "error" for run in runs):
        raise AllTrialsFailed(f"every evaluation run raised an error, the first: {runs[0]['error']}")
    if bootstrap:
        summary = bootstrap_summary(document, resamples=BOOTSTRAP_RESAMPLES, seed=plan.job_seed)
        document["bootstrap"] = {"resamples": BOOTSTRAP_RESAMPLES, "optimizers": summary}
        write_json(out_dir / "bootstrap.json", document["bootstrap"])
    if bootstrap or plan.budget is not None:
        write_json(out_dir / "results.json", document)
    return document


def results_tables(document: Mapping[str, Any]) -> list[Summary]:
    """An evaluation document as tables: mean ± std per optimizer with divergences and errors
    counted apart, the values and their sources; the bootstrap medians when it has them."""
    low, high = document["window"]
    rule = document.get("window_rule", "")
    title = f"{document['task']}: {len(document['seeds'])} seeds × {document['steps']} evaluations"
    rows, lines = [], []
    for name, e in document["optimizers"].items():
        window_note, options = own_settings(document, e)
        loss = "no finite run" if e["mean"] is None else f"{e['mean']:.6g} ± {e['std']:.2g}"
        loss += window_note
        rate = "-" if e["steps_per_second"] is None else f"{e['steps_per_second']:,.0f}"
        errors = e.get("errors", 0)
        rows.append((name, loss, f"{e['diverged']}/{e['runs']}", f"{errors}/{e['runs']}", rate, e["source"]))
        value_sources = e.get("value_sources", {})
        values = ", ".join(
            f"{k}={v:.6g}"
            + (f" ({value_sources[k]})" if value_sources.get(k, e["source"]) != e["source"] else "")
            for k, v in e["hyperparameters"].items()
        )
        lines.append(f"  {name}: {values}" + (f"; {options}" if options else ""))
        if e.get("error"):
            lines.append(f"  {name}: first error: {e['error']}")
    if rule and not rule.startswith("evaluations strictly inside"):
        lines.append(f"window: {rule}")
    columns = (
        "optimizer",
        f"loss, evals {low}–{high} (mean ± std)",
        "diverged",
        "errors",
        "steps/s",
        "source",
    )
    tables = [Summary(title, columns, rows, lines)]
    if "bootstrap" in document:
        boot_rows = [
            (name, quantity, f"{s['median']:.6g}", f"{s['bootstrap_mean']:.6g} ± {s['bootstrap_std']:.2g}")
            for name, quantities in document["bootstrap"]["optimizers"].items()
            for quantity, s in quantities.items()
            if s["median"] is not None
        ]
        columns = ("optimizer", "quantity", "median", "bootstrap median (mean ± std)")
        tables.append(Summary("bootstrap medians", columns, boot_rows))
    return tables
