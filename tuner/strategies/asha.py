"""The ``asha`` strategy: random search with ASHA early stopping on Ray Tune (clarke.md §2).

``tune_asha(config, run_dir)`` draws ``num_samples`` configurations from the optimizer's ASHA
space (:mod:`schedules.asha`; plus the batch size for tasks that have one), trains each on the
task with ``ray.tune.Tuner``, and lets ``ASHAScheduler`` stop the trials whose metric is not in
the best 1/reduction_factor at a rung. The winner is the trial with the lowest *last* reported
metric (Tune's ``get_best_result`` scope "last", as the authors choose it).

Where we depart from the authors' code, and why:

* Time is the ``budget`` kind (:mod:`tuner.budgets`): ``examples`` seen (the default on tasks
  with minibatches: the fixed-epoch suite's unit, so a batch of 3200 gets 1/64 of the updates of
  a batch of 50), ``updates`` (the default elsewhere), ``seconds`` (the paper's ``time_total_s``
  rungs, every curvature product in the measured time) or ``evaluations`` (loss evaluations, the
  LODO paper's count). ``max_t``, ``grace_period`` and ``report_every`` are all in that unit;
  rungs are at grace_period · reduction_factorᵏ.
* Each trial reports every ``report_every`` units (Tune's guidance: not every step), not after
  every step; a rung is decided at the first report at or past it.
* The metric is ``validation_loss`` (whole validation set) where the task has one, else
  ``training_loss`` (the latest minibatch loss), as the authors tune Rosenbrock.
* Trial seeds are drawn by Tune's random search seeded with the job seed, so the sampled
  configurations repeat exactly; which trials ASHA stops depends on the order results arrive
  in, so a rerun on a busy machine may pick another winner.

``time_budget_s`` (the authors' runtime-budget suites) ends the whole search after that many
seconds, stopping the trials still running. A trial that meets a non-finite loss reports
``diverged`` with the metric +inf and ends.

The final evaluation (N seeds of the winner, 50 by default as §2.4) is
:func:`tuner.evaluate.evaluate`, each optimizer for the same budget in its own updates; the
paper's summary of it, medians with a bootstrap spread (§2.4), is
:func:`tuner.summary.bootstrap_summary`. The job's baselines are ASHA-tuned too, each in its own
search space and batch size under the same budget (``tune_baselines``), as the AdamQLR paper
compares them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import lodo
import schedules
import tasks as task_registry
from schedules import asha as asha_spaces
from tasks.registry import spec as task_spec

from .. import budgets, final
from .. import events as ev
from .._validation import check_int_at_least, invalid
from ..rundir import RunDir, read_json, versions, write_json
from ..trial import Diverged, build_optimizer, train
from .base import AllTrialsFailed, OptionValue, StrategyOptions, Summary

if TYPE_CHECKING:
    from ..runtime import JobContext
    from ..specs import TuneJob

Metric = Literal["auto", "validation_loss", "training_loss"]
METRICS: tuple[str, ...] = ("auto", "validation_loss", "training_loss")
EXPERIMENT = "asha"  # the Tune experiment's folder under RUN_DIR/tune/
TRIAL_LOG = "trials.jsonl"  # one line per finished trial, in the order they finish


@dataclass(frozen=True)
class AshaConfig:
    """Everything that defines an ASHA job (task, optimizer, ASHA settings, seed) and the
    resources of one trial."""

    task: str
    optimizer: str
    num_samples: int = 200
    max_t: int = 1000
    grace_period: int = 10
    reduction_factor: float = 4
    report_every: int = 10
    # what max_t, grace_period and report_every count (tuner.budgets); None: the task's default
    budget: str | None = None
    metric: Metric = "auto"
    tune_batch_size: bool = True
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    num_cpus_per_trial: float = 1.0
    num_gpus_per_trial: float = 0.0
    time_budget_s: float | None = None
    optimizer_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in task_registry.TASK_NAMES:
            raise invalid("task", self.task, " | ".join(task_registry.TASK_NAMES))
        asha_spaces.asha_space(self.optimizer)  # unknown optimizer / no space: ValueError
        check_int_at_least("num_samples", self.num_samples, 1)
        check_int_at_least("max_t", self.max_t, 1)
        check_int_at_least("grace_period", self.grace_period, 1)
        check_int_at_least("report_every", self.report_every, 1)
        check_int_at_least("seed", self.seed, 0)
        object.__setattr__(self, "budget", budgets.resolve_kind(self.task, self.budget))
        if self.grace_period > self.max_t:
            raise invalid("grace_period", self.grace_period, f"an integer from 1 to max_t = {self.max_t}")
        if self.report_every > self.grace_period:
            raise invalid("report_every", self.report_every, f"at most grace_period = {self.grace_period}")
        rf = self.reduction_factor
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not math.isfinite(rf) or rf < 2:
            raise invalid("reduction_factor", rf, "a number >= 2")
        if self.metric not in METRICS:
            raise invalid("metric", self.metric, " | ".join(METRICS))
        for name in ("num_cpus_per_trial", "num_gpus_per_trial"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise invalid(name, value, "a number >= 0")
        budget = self.time_budget_s
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0
        ):
            raise invalid("time_budget_s", budget, "None or a number of seconds > 0")
        task_spec(self.task).resolve_options(self.task_options)
        lodo.get(self.optimizer).check_options(self.optimizer_options)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "strategy": "asha",
            "task": self.task,
            "optimizer": self.optimizer,
            "num_samples": self.num_samples,
            "max_t": self.max_t,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "report_every": self.report_every,
            "budget": self.budget,
            "metric": self.metric,
            "tune_batch_size": self.tune_batch_size,
            "seed": self.seed,
            "task_options": dict(self.task_options),
            "device": self.device,
            "num_cpus_per_trial": self.num_cpus_per_trial,
            "num_gpus_per_trial": self.num_gpus_per_trial,
            "time_budget_s": self.time_budget_s,
        }
        if self.optimizer_options:  # absent when unset, so older run directories still resume
            out["optimizer_options"] = dict(self.optimizer_options)
        return out

    def rungs(self) -> list[int]:
        """Where ASHA decides, in ``budget`` units (Ray's formula: grace · rfᵏ below max_t)."""
        out, milestone = [], float(self.grace_period)
        while milestone < self.max_t:
            out.append(round(milestone))
            milestone *= self.reduction_factor
        return out


def _resolve_metric(config: AshaConfig) -> str:
    if config.metric != "auto":
        return config.metric
    task = task_registry.build(config.task, seed=config.seed, device=config.device, **config.task_options)
    return "validation_loss" if hasattr(task, "validation_loss") else "training_loss"


def _param_space(config: AshaConfig, space: schedules.AshaSpace) -> dict[str, Any]:
    """Tune's sampling domains. A ``one_minus_loguniform`` hyperparameter is drawn as its x (the
    trial turns it into 1 − x), so every draw comes from Tune's seeded random search."""
    from ray import tune

    params: dict[str, Any] = {
        name: tune.randint(d.low, d.high + 1)
        if d.distribution == "int_uniform"
        else tune.loguniform(d.low, d.high)
        for name, d in space.params.items()
    }
    batched = budgets.has_batches(config.task) and "batch_size" not in config.task_options
    if config.tune_batch_size and batched:
        params["batch_size"] = tune.choice(list(asha_spaces.batch_sizes()))
    params["seed"] = tune.randint(0, 2**31 - 1)
    return params


def _values(space: schedules.AshaSpace, drawn: Mapping[str, Any]) -> dict[str, float]:
    """Hyperparameter values of a trial's draws."""
    return {
        name: 1 - float(drawn[name]) if d.distribution == "one_minus_loguniform" else float(drawn[name])
        for name, d in space.params.items()
    }


# what a trial's report holds besides Tune's bookkeeping: step, diverged, training_loss and the
# task's metrics (validation_/test_ loss, accuracy or mse)
_REPORTED = {"training_loss", "validation_loss", "test_loss", "validation_accuracy", "test_accuracy"}
_REPORTED |= {"validation_mse", "test_mse"}


def _train(sampled: dict[str, Any], settings: dict[str, Any]) -> None:
    """The Tune trainable: one optimizer on one seeded task until it has spent ``max_t`` of its
    budget (:class:`tuner.budgets.Meter`), stepping with ``tuner.trial.train`` as ``run_trial``
    does, reporting every ``report_every`` of the budget and at the end."""
    import torch
    from ray import tune

    torch.set_num_threads(settings["threads"])
    spec = lodo.get(settings["optimizer"])
    values = _values(settings["space"], sampled)
    options = dict(settings["task_options"])
    if "batch_size" in sampled:
        options["batch_size"] = int(sampled["batch_size"])
    seed, max_t, every = int(sampled["seed"]), settings["max_t"], settings["report_every"]
    kind = settings["budget"]
    task = task_registry.build(settings["task"], seed=seed, device=settings["device"], **options)
    meter = budgets.Meter(kind, budgets.examples_per_update(task, options.get("batch_size")))
    # a schedule over training (LODO's) needs the trial's length in evaluations: exact for every
    # kind but seconds, where the task's final length stands in
    total = budgets.final_evaluations(kind, max_t, settings["optimizer"], meter.examples)
    optimizer = build_optimizer(
        task,
        settings["optimizer"],
        values,
        seed=seed,
        total_steps=total or settings["final_steps"],
        options=settings["optimizer_options"],
    )
    losses: list[float] = []
    reported = 0.0

    def report(used: float) -> None:
        metrics = {**meter.counts(len(losses)), "budget_used": used, "training_loss": losses[-1]}
        metrics.update(task.metrics(), diverged=False)
        tune.report(metrics)

    # the evaluations kind stops inside train (a same-batch pair starts only when both fit)
    cap = max_t if kind == "evaluations" else 2**62
    used = 0.0
    try:
        for _ in train(task, optimizer, spec.evaluation, cap, losses):
            used = meter.spent(len(losses))
            if used >= max_t:
                break
            if used - reported >= every:
                reported = used
                report(used)
        report(meter.value(len(losses)))
    except (Diverged, FloatingPointError):
        tune.report(
            {
                **meter.counts(len(losses)),
                "budget_used": meter.value(len(losses)),
                "training_loss": math.inf,
                settings["metric"]: math.inf,
                "diverged": True,
            }
        )


def _trial_record(trial, index: int, config: AshaConfig, metric: str, space: schedules.AshaSpace) -> dict:
    last = trial.last_result or {}
    steps = int(last.get("updates", 0))
    used = float(last.get("budget_used", 0.0))
    value = last.get(metric)
    diverged = bool(last.get("diverged", False))
    error = None if trial.status != "ERROR" else str(getattr(trial, "error_file", None) or "error")
    return {
        "index": index,
        "trial_id": trial.trial_id,
        "values": _values(space, trial.config),
        "task_options": {"batch_size": int(trial.config["batch_size"])}
        if "batch_size" in trial.config
        else {},
        "seed": int(trial.config["seed"]),
        "steps": steps,  # updates
        "evaluations": int(last.get("evaluations", 0)),
        "budget_used": used,
        "metric": metric,
        "value": float(value) if value is not None and math.isfinite(value) else None,
        "stopped_early": error is None and not diverged and used < config.max_t,
        "diverged": diverged,
        "error": error,
        "last_metrics": {
            k: float(v) for k, v in last.items() if k in _REPORTED and isinstance(v, (int, float))
        },
    }


@contextlib.contextmanager
def _legacy_tune_output():
    """Ray Tune's new console output prints its experiment box and where its results and
    TensorBoard logs are even at ``verbose=0``; the legacy output honours it (the job reports its
    own progress). ``RAY_AIR_NEW_OUTPUT`` set by the user wins."""
    if "RAY_AIR_NEW_OUTPUT" in os.environ:
        yield
        return
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)


def tune_asha(config: AshaConfig, ctx: JobContext) -> dict[str, Any]:
    """Run the ASHA job; returns the hyperparameters document, also written to the run dir.

    Uses the Ray already initialised in this process, or starts a local one (temp dir
    ``RUN_DIR/ray``) and shuts it down at the end. Tune's own files go to ``RUN_DIR/tune/asha``;
    each finished trial is logged to ``RUN_DIR/trials.jsonl`` as it finishes and emitted as a
    ``TrialFinished`` event (``record``: the trial's log line).

    ``ctx.resume`` continues a killed job in the run directory (same config, else ValueError)
    with ``Tuner.restore``: finished trials are kept with their results, the trials that were
    running start again, the random search draws the configurations it had not drawn yet. Tune's
    experiment directory is the checkpoint here (the store holds no ASHA state).
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from ..executors import RayExecutor
    from ._asha_log import LIVE_HOOKS, TrialLog, read_trial_log

    run_dir, emit = ctx.run_dir, ctx.emit
    run_dir.claim(config.to_dict(), resume=ctx.resume, stored=ctx.history is not None)
    space = asha_spaces.asha_space(config.optimizer)
    metric = _resolve_metric(config)
    settings = {
        "task": config.task,
        "optimizer": config.optimizer,
        "space": space,
        "task_options": dict(config.task_options),
        "device": config.device,
        "max_t": config.max_t,
        "report_every": config.report_every,
        "budget": config.budget,
        "final_steps": final.final_length(config.task, 1.0),
        "metric": metric,
        "threads": max(1, int(config.num_cpus_per_trial)),
        "optimizer_options": dict(config.optimizer_options),
    }
    log_path = run_dir.root.resolve() / TRIAL_LOG
    experiment = run_dir.root.resolve() / "tune" / EXPERIMENT

    def report(record: dict[str, Any]) -> None:
        status = "error" if record["error"] else "diverged" if record["diverged"] else "ok"
        values = {**record["values"], **record["task_options"]}
        emit(
            ev.TrialFinished(
                record["index"], config.num_samples, status, values, record["error"], record=record
            )
        )

    emit(ev.PhaseStarted("tuning", "asha", config.num_samples, "trials"))
    restore = ctx.resume and tune.Tuner.can_restore(experiment)
    if not restore:
        log_path.unlink(missing_ok=True)  # nothing Tune can continue (killed before it saved): start over
    for record in read_trial_log(log_path):  # finished before the restart
        report(record)
    trainable = tune.with_resources(
        tune.with_parameters(_train, settings=settings),
        {"cpu": config.num_cpus_per_trial, "gpu": config.num_gpus_per_trial},
    )
    if restore:
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True)
    else:
        scheduler = ASHAScheduler(
            time_attr="budget_used",
            max_t=config.max_t,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(config, space),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="min",
                num_samples=config.num_samples,
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(random_state=config.seed),
                reuse_actors=True,
                time_budget_s=config.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=str(experiment.parent),
                verbose=0,
                callbacks=[
                    TrialLog(
                        str(log_path),
                        functools.partial(_trial_record, config=config, metric=metric, space=space),
                    )
                ],
            ),
        )
    owner = None if ray.is_initialized() else RayExecutor(temp_dir=run_dir.root / "ray")
    LIVE_HOOKS[str(log_path)] = report
    try:
        with _legacy_tune_output():
            grid = tuner.fit()
    finally:
        LIVE_HOOKS.pop(str(log_path), None)
        if owner is not None:
            owner.close()
    trials = read_trial_log(log_path)
    logged = {r["trial_id"] for r in trials}
    for result in grid:  # finished in a killed run after Tune saved its state, before the log line
        trial_id = (result.metrics or {}).get("trial_id")
        # a trial the time budget cut off before it reported has no config to record: not finished
        if trial_id is not None and trial_id not in logged and result.config:
            trial = SimpleNamespace(
                trial_id=trial_id,
                last_result=result.metrics,
                config=result.config,
                status="ERROR" if result.error else "TERMINATED",
                error_file=str(result.error) if result.error else None,
            )
            trials.append(_trial_record(trial, len(trials), config, metric, space))
    if not trials:
        raise RuntimeError(
            f"No ASHA trial finished within time_budget_s = {config.time_budget_s} s "
            f"({config.num_samples} drawn): give the search more time or fewer steps"
        )
    if all(r["error"] for r in trials):
        raise AllTrialsFailed(f"every ASHA trial raised an error, the first: {trials[0]['error']}")
    try:
        best = grid.get_best_result(metric=metric, mode="min", scope="last", filter_nan_and_inf=False)
    except RuntimeError as err:  # trials started, none reported the metric before the budget ended
        raise RuntimeError(
            f"No ASHA trial reported {metric} within time_budget_s = {config.time_budget_s} s "
            f"({len(trials)} started): give the search more time or fewer steps"
        ) from err
    winner = next(r for r in trials if r["trial_id"] == best.metrics["trial_id"])
    hyperparameters = lodo.get(config.optimizer).check_values(winner["values"])
    task_options = {**config.task_options, **winner["task_options"]}
    document = {
        "strategy": "asha",
        "task": config.task,
        "optimizer": config.optimizer,
        "hyperparameters": hyperparameters,
        "transforms": {name: d.distribution for name, d in space.params.items()},
        "search_space": {
            "source": asha_spaces.source(),
            **space.describe(),
            "batch_sizes": list(asha_spaces.batch_sizes())
            if "batch_size" in winner["task_options"]
            else None,
        },
        "settings": config.to_dict(),
        "budget": {
            "kind": config.budget,
            "max_t": config.max_t,
            "counts": budgets.DESCRIPTIONS[config.budget],
        },
        "rungs": config.rungs(),
        "metric": metric,
        "best": {k: winner[k] for k in ("trial_id", "index", "seed", "steps", "value")},
        "all_diverged": all(r["value"] is None for r in trials),
        "stopped_early": sum(r["stopped_early"] for r in trials),
        "trials": trials,
        "job_seed": config.seed,
        "trial_seeds": "drawn by Tune's random search seeded with the job seed; stored per trial",
        "task_options": task_options,
        "tune_dir": str(run_dir.root.resolve() / "tune" / EXPERIMENT),
        "optimizer_options": dict(config.optimizer_options),
        "versions": versions(),
    }
    write_json(run_dir.hyperparameters_path, document)
    return document


# what the job's document keeps of a baseline's search (its own hyperparameters.json has it all)
_BASELINE_KEYS = ("strategy", "optimizer", "hyperparameters", "transforms", "search_space", "task_options")
_BASELINE_KEYS += ("best", "budget", "stopped_early")


def final_plan(job: TuneJob, document: dict[str, Any]) -> final.EvaluationPlan:
    """The final runs after an ASHA job: the tuned optimizer and each baseline ASHA tuned at their
    values and batch sizes, any other baseline at Table 6's values or its defaults at the tuned
    optimizer's batch size; the job's ``evaluation_task_options`` over each.

    Each runs the search's budget in its own updates (:func:`tuner.budgets.final_evaluations`):
    ``examples`` ÷ its examples per update, ``updates`` as they are, ``evaluations`` as they are;
    under ``seconds``, the updates the winning trial of its search reached in max_t seconds (the
    tuned optimizer's for a baseline not searched), so a rerun does not depend on how loaded the
    machine is. ``budget.per_optimizer`` of the results says what each got and why.
    """
    budget = document.get("budget") or {"kind": "evaluations", "max_t": document["settings"]["max_t"]}
    kind, max_t = budget["kind"], budget["max_t"]
    searched = {job.optimizer: (document, "tuned")}
    searched |= {name: (d, "tuned (ASHA)") for name, d in document.get("baselines", {}).items()}
    entries, steps, options, per_optimizer = {}, {}, {}, {}
    for name in job.optimizers():
        own, source = searched.get(name, (None, None))
        if own is not None:
            entries[name] = final.tuned_entry(own, source)
        else:
            entries[name] = final.reference_entry(job.task, name, schedule=None)
        options[name] = {**(own or document)["task_options"], **job.options.evaluation_task_options}
        batch = options[name].get("batch_size") if budgets.has_batches(job.task) else None
        if batch is None and budgets.has_batches(job.task):
            batch = budgets.default_batch_size(job.task, options[name])
        examples = 1
        if kind == "examples":
            built = task_registry.build(job.task, seed=job.seed, device="cpu", **options[name])
            examples = budgets.examples_per_update(built, batch)
        evaluations = budgets.final_evaluations(kind, max_t, name, examples)
        if evaluations is None:  # seconds
            reached = (own or document)["best"]["steps"]
            evaluations = reached * budgets.evaluations_per_update(name)
            rule = f"{reached} updates: what the winning trial reached in {max_t} s"
        elif kind == "examples":
            rule = f"{max_t} examples at {examples} per update"
        else:
            rule = f"{max_t} {kind}"
        steps[name] = max(2, evaluations)
        per_optimizer[name] = {"evaluations": steps[name], "task_options": options[name], "rule": rule}
    return final.EvaluationPlan(
        job.task,
        entries,
        steps=steps[job.optimizer],
        step_scale=job.step_scale,
        seeds=job.seeds,
        job_seed=job.seed,
        device=job.device,
        task_options=options[job.optimizer],
        meta_dtype=job.meta_dtype,
        entry_steps=steps,
        entry_task_options=options,
        budget={**budget, "per_optimizer": per_optimizer},
    )


class AshaOptions(StrategyOptions):
    """ASHA's settings (clarke.md §2); max_t, grace_period and report_every count ``budget`` units."""

    name = "asha"
    strategy: Literal["asha"] = "asha"
    num_samples: int = Field(200, ge=1, le=1_000_000, description="Configurations drawn.")
    budget: budgets.BudgetKind | None = Field(
        None,
        description=(
            "What max_t, grace_period and report_every count: examples (training examples seen; the "
            "default on tasks with minibatches), updates (the default elsewhere), seconds (measured "
            "wall time, curvature products included) or evaluations (loss evaluations, the LODO paper's)."
        ),
    )
    max_t: int | None = Field(
        None,
        ge=1,
        le=100_000_000_000,
        description=(
            "Budget per trial (default: the task's final length in updates or evaluations, that many "
            "updates at the task's default batch size in examples, 900 in seconds; scaled by step_scale)."
        ),
    )
    grace_period: int | None = Field(
        None,
        ge=1,
        le=100_000_000_000,
        description="Budget before the first rung (default: 10 updates' worth, 1 in seconds).",
    )
    reduction_factor: float = Field(
        4.0, ge=2, le=1000, allow_inf_nan=False, description="Keep the best 1/this at each rung."
    )
    report_every: int | None = Field(
        None, ge=1, le=100_000_000_000, description="Budget between reports to Tune (default: grace_period)."
    )
    metric: Metric = "auto"
    tune_batch_size: bool = True
    tune_baselines: bool = Field(
        True,
        description=(
            "Tune each baseline with ASHA too (its own space and batch size, the same budget), as the "
            "AdamQLR paper compares them; false: Table 6's values or the defaults at the tuned batch size."
        ),
    )
    evaluation_task_options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description=(
            'Task options of the final runs that differ from tuning\'s, e.g. {"start": "fixed"} for '
            'rosenbrock-classic tuned from {"start": "random"} (the AdamQLR paper\'s protocol).'
        ),
    )
    time_budget_s: float | None = Field(
        None, gt=0, le=30 * 86400, allow_inf_nan=False, description="Stop the search after this many seconds."
    )


class Asha:
    """The registry's ``asha`` entry."""

    name = "asha"
    summary_line = "random search with ASHA early stopping on Ray Tune (AdamQLR paper, clarke.md §2)"
    Options = AshaOptions
    resumable = True
    tunes_optimizer = True
    default_seeds = 50  # the AdamQLR paper's final repeats (clarke.md §2.4)

    def config(self, job: TuneJob, optimizer: str | None = None) -> AshaConfig:
        """The search of ``optimizer`` (default the job's; a baseline's under the same budget)."""
        options: AshaOptions = job.options
        name = optimizer or job.optimizer
        kind = budgets.resolve_kind(job.task, options.budget)
        per_update = budgets.default_batch_size(job.task, dict(job.task_options)) if kind == "examples" else 1
        final_steps = final.final_length(job.task, job.step_scale)
        max_t = options.max_t or max(
            1,
            round(
                budgets.default_max_t(kind, final_steps, per_update)
                * (job.step_scale if kind == "seconds" else 1)
            ),
        )
        grace = options.grace_period or (1 if kind == "seconds" else 10 * (per_update or 1))
        grace = min(grace, max_t) if options.grace_period is None else grace
        settings = options.model_dump(exclude={"strategy", "tune_baselines", "evaluation_task_options"})
        settings.update(
            budget=kind, max_t=max_t, grace_period=grace, report_every=options.report_every or grace
        )
        return AshaConfig(
            job.task,
            name,
            **settings,
            seed=job.seed,
            task_options=dict(job.task_options),
            device=job.device,
            num_cpus_per_trial=job.num_cpus_per_trial,
            num_gpus_per_trial=job.num_gpus_per_trial,
            optimizer_options=final.optimizer_options(name, job.meta_dtype),
        )

    def tuned_baselines(self, job: TuneJob) -> list[str]:
        """The baselines this job tunes with ASHA (all of them unless ``tune_baselines`` is false)."""
        return [n for n in job.baselines if n != job.optimizer] if job.options.tune_baselines else []

    def check(self, job: TuneJob) -> None:
        self.config(job)
        for name in self.tuned_baselines(job):
            try:
                self.config(job, name)
            except ValueError as err:
                raise ValueError(
                    f"{err} — baseline {name!r} is tuned by ASHA too; give tune_baselines false to run it "
                    "at Table 6's values or its defaults instead"
                ) from None
        task_spec(job.task).resolve_options({**job.task_options, **job.options.evaluation_task_options})

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]:
        """The job's optimizer, then each baseline in ``RUN_DIR/baselines/<name>`` (a resumed job
        keeps the baselines already tuned); the job's document names each baseline's result."""
        if ctx.runtime.executor == "ray":
            ctx.executor()  # joins the runtime's Ray (a cluster, say) before Tune starts its own
        document = tune_asha(self.config(job), ctx)
        tuned = {}
        for name in self.tuned_baselines(job):
            run_dir = RunDir(ctx.run_dir.root / "baselines" / name)
            if ctx.resume and run_dir.hyperparameters_path.exists():
                baseline = read_json(run_dir.hyperparameters_path)
            else:
                baseline_ctx = dataclasses.replace(
                    ctx, run_dir=run_dir, resume=ctx.resume and run_dir.config_path.exists(), history=None
                )
                baseline = tune_asha(self.config(job, name), baseline_ctx)
            tuned[name] = {k: baseline[k] for k in _BASELINE_KEYS} | {
                "trials": len(baseline["trials"]),
                "run_dir": f"baselines/{name}",
            }
        if tuned:
            document["baselines"] = tuned
            write_json(ctx.run_dir.hyperparameters_path, document)
        return document

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Every optimizer for the search's budget in its own updates (:func:`final_plan`),
        nothing halved; then the AdamQLR paper's bootstrap medians (§2.4), also in ``bootstrap.json``."""
        return final.run_plan(final_plan(job, document), ctx, bootstrap=True)

    def summary(self, document: dict[str, Any]) -> Summary:
        rows = [
            (name, f"{value:.6g}", document["transforms"].get(name, "default (not tuned)"))
            for name, value in document["hyperparameters"].items()
        ]
        drawn = document["search_space"].get("batch_sizes") is not None
        rows += [
            (name, str(value), "choice" if drawn and name == "batch_size" else "given")
            for name, value in document["task_options"].items()
        ]
        best = document["best"]
        value = "diverged" if best["value"] is None else f"{best['value']:.6g}"
        errors = sum(bool(t["error"]) for t in document["trials"])
        budget = document.get("budget", {"kind": "evaluations", "max_t": document["settings"]["max_t"]})
        line = (
            f"best {document['metric']} {value} after {best['steps']} updates; "
            f"{document['stopped_early']}/{len(document['trials'])} trials stopped early; "
            f"budget {budget['max_t']} {budget['kind']} a trial"
            + (f", {errors} raised an error" if errors else "")
        )
        lines = [line]
        for name, baseline in document.get("baselines", {}).items():
            values = ", ".join(f"{k}={v:.6g}" for k, v in baseline["hyperparameters"].items())
            options = ", ".join(f"{k}={v}" for k, v in baseline["task_options"].items())
            lines.append(
                f"baseline {name}, tuned by its own search ({baseline['run_dir']}, {baseline['trials']} "
                f"trials): {values}" + (f"; {options}" if options else "")
            )
        title = f"ASHA: {document['optimizer']} on {document['task']}"
        return Summary(title, ("hyperparameter", "tuned", "drawn from"), rows, lines)

    def results_summary(self, results: dict[str, Any]) -> list[Summary]:
        return final.results_tables(results)

    def describe(self) -> dict[str, Any]:
        from ..specs import TuneJob  # the job spec knows the strategies: imported when asked

        # the defaults as a job resolves them, on digits-mlp (budget and max_t depend on the task)
        defaults = self.config(TuneJob(task="digits-mlp", optimizer="adam", strategy="asha")).to_dict()
        return {
            "name": self.name,
            "summary": self.summary_line,
            "optimizers": list(asha_spaces.asha_optimizers()),
            "settings": {k: v for k, v in defaults.items() if k not in ("strategy", "task", "optimizer")},
            "options": AshaOptions.model_json_schema(),
            "unit": (
                "max_t, grace_period and report_every count the budget: examples (default with "
                "minibatches), updates (default elsewhere), seconds or evaluations"
            ),
        }


STRATEGY = Asha()
