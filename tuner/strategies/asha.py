"""The ``asha`` strategy: random search with ASHA early stopping on Ray Tune (clarke.md §2).

``tune_asha(config, run_dir)`` draws ``num_samples`` configurations from the optimizer's ASHA
space (:mod:`schedules.asha`; plus the batch size for tasks that have one), trains each on the
task with ``ray.tune.Tuner``, and lets ``ASHAScheduler`` stop the trials whose metric is not in
the best 1/reduction_factor at a rung. The winner is the trial with the lowest *last* reported
metric (Tune's ``get_best_result`` scope "last", as the authors choose it).

Where we depart from the authors' code, and why:

* Time is counted in training steps (loss evaluations, as everywhere in lodotune), not seconds:
  rungs then fall at the same points of training on any machine. ``max_t``, ``grace_period``
  and ``report_every`` are all in steps; rungs are at grace_period · reduction_factorᵏ.
* Each trial reports every ``report_every`` steps (Tune's guidance: not every step), not after
  every step; a rung is decided at the first report at or past it.
* The metric is ``validation_loss`` (whole validation set) where the task has one, else
  ``training_loss`` (the latest minibatch loss), as the authors tune Rosenbrock.
* Trial seeds are drawn by Tune's random search seeded with the job seed, so the sampled
  configurations repeat exactly; which trials ASHA stops depends on the order results arrive
  in, so a rerun on a busy machine may pick another winner.

``time_budget_s`` (the authors' runtime-budget suites) ends the whole search after that many
seconds, stopping the trials still running. A trial that meets a non-finite loss reports
``diverged`` with the metric +inf and ends.

The final evaluation (N seeds of the winner) is :func:`tuner.evaluate.evaluate`; the paper's
summary of it, medians with a bootstrap spread (§2.4), is :func:`tuner.summary.bootstrap_summary`.
"""

from __future__ import annotations

import functools
import math
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

from .. import events as ev
from .. import final
from .._validation import check_int_at_least, invalid
from ..rundir import versions, write_json
from ..trial import Diverged, build_optimizer, train
from .base import AllTrialsFailed, StrategyOptions, Summary

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
        if self.grace_period > self.max_t:
            raise invalid("grace_period", self.grace_period, f"an integer from 1 to max_t = {self.max_t}")
        if self.report_every > self.grace_period:
            raise invalid(
                "report_every", self.report_every, f"at most grace_period = {self.grace_period} steps"
            )
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
        """The steps at which ASHA decides (Ray's formula: grace · rfᵏ below max_t)."""
        out, milestone = [], float(self.grace_period)
        while milestone < self.max_t:
            out.append(round(milestone))
            milestone *= self.reduction_factor
        return out


def _has_batch_size(task: str) -> bool:
    return any(option.name == "batch_size" for option in task_spec(task).options)


def _resolve_metric(config: AshaConfig) -> str:
    if config.metric != "auto":
        return config.metric
    task = task_registry.build(config.task, seed=config.seed, device=config.device, **config.task_options)
    return "validation_loss" if hasattr(task, "validation_loss") else "training_loss"


def _param_space(config: AshaConfig, space: schedules.AshaSpace) -> dict[str, Any]:
    """Tune's sampling domains. A ``one_minus_loguniform`` hyperparameter is drawn as its x (the
    trial turns it into 1 − x), so every draw comes from Tune's seeded random search."""
    from ray import tune

    params: dict[str, Any] = {name: tune.loguniform(d.low, d.high) for name, d in space.params.items()}
    if config.tune_batch_size and _has_batch_size(config.task) and "batch_size" not in config.task_options:
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
    """The Tune trainable: one optimizer on one seeded task for up to max_t loss evaluations,
    stepping with ``tuner.trial.train`` as ``run_trial`` does, reporting every ``report_every``
    evaluations and at the end."""
    import torch
    from ray import tune

    torch.set_num_threads(settings["threads"])
    spec = lodo.get(settings["optimizer"])
    values = _values(settings["space"], sampled)
    options = dict(settings["task_options"])
    if "batch_size" in sampled:
        options["batch_size"] = int(sampled["batch_size"])
    seed, max_t, every = int(sampled["seed"]), settings["max_t"], settings["report_every"]
    task = task_registry.build(settings["task"], seed=seed, device=settings["device"], **options)
    optimizer = build_optimizer(
        task,
        settings["optimizer"],
        values,
        seed=seed,
        total_steps=max_t,
        options=settings["optimizer_options"],
    )
    losses: list[float] = []
    reported = 0

    def report() -> None:
        metrics = {"step": len(losses), "training_loss": losses[-1], "diverged": False}
        metrics.update(task.metrics())
        tune.report(metrics)

    try:
        for _ in train(task, optimizer, spec.evaluation, max_t, losses):
            if len(losses) - reported >= every:
                reported = len(losses)
                report()
        if len(losses) > reported:
            report()
    except (Diverged, FloatingPointError):
        tune.report(
            {"step": len(losses), "training_loss": math.inf, settings["metric"]: math.inf, "diverged": True}
        )


def _trial_record(trial, index: int, config: AshaConfig, metric: str, space: schedules.AshaSpace) -> dict:
    last = trial.last_result or {}
    steps = int(last.get("step", 0))
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
        "steps": steps,
        "metric": metric,
        "value": float(value) if value is not None and math.isfinite(value) else None,
        "stopped_early": error is None and not diverged and steps < config.max_t,
        "diverged": diverged,
        "error": error,
        "last_metrics": {
            k: float(v) for k, v in last.items() if k in _REPORTED and isinstance(v, (int, float))
        },
    }


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
            time_attr="step",
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


class AshaOptions(StrategyOptions):
    """ASHA's settings (clarke.md §2); steps count loss evaluations."""

    name = "asha"
    strategy: Literal["asha"] = "asha"
    num_samples: int = Field(200, ge=1, le=1_000_000, description="Configurations drawn.")
    max_t: int | None = Field(
        None, ge=1, le=100_000_000, description="Steps per trial (default: the task's final length)."
    )
    grace_period: int = Field(10, ge=1, le=100_000_000, description="Steps before the first rung.")
    reduction_factor: float = Field(
        4.0, ge=2, le=1000, allow_inf_nan=False, description="Keep the best 1/this at each rung."
    )
    report_every: int = Field(10, ge=1, le=100_000_000, description="Steps between reports to Tune.")
    metric: Metric = "auto"
    tune_batch_size: bool = True
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

    def config(self, job: TuneJob) -> AshaConfig:
        options: AshaOptions = job.options
        settings = options.model_dump(exclude={"strategy"})
        settings["max_t"] = options.max_t or final.final_length(job.task, job.step_scale)
        return AshaConfig(
            job.task,
            job.optimizer,
            **settings,
            seed=job.seed,
            task_options=dict(job.task_options),
            device=job.device,
            num_cpus_per_trial=job.num_cpus_per_trial,
            num_gpus_per_trial=job.num_gpus_per_trial,
            optimizer_options=final.optimizer_options(job.optimizer, job.meta_dtype),
        )

    def check(self, job: TuneJob) -> None:
        self.config(job)

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]:
        if ctx.runtime.executor == "ray":
            ctx.executor()  # joins the runtime's Ray (a cluster, say) before Tune starts its own
        return tune_asha(self.config(job), ctx)

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """``max_t`` steps at the batch size ASHA tuned, nothing halved; then the AdamQLR paper's
        bootstrap medians (§2.4), also in ``bootstrap.json``."""
        plan = final.plan_after_tuning(
            job,
            document,
            schedule=None,
            steps=document["settings"]["max_t"],
            step_scale=job.step_scale,
            task_options=dict(document["task_options"]),
        )
        return final.run_plan(plan, ctx, bootstrap=True)

    def summary(self, document: dict[str, Any]) -> Summary:
        rows = [
            (name, f"{value:.6g}", document["transforms"].get(name, "default (not tuned)"))
            for name, value in document["hyperparameters"].items()
        ]
        rows += [(name, str(value), "choice") for name, value in document["task_options"].items()]
        best = document["best"]
        value = "diverged" if best["value"] is None else f"{best['value']:.6g}"
        errors = sum(bool(t["error"]) for t in document["trials"])
        line = (
            f"best {document['metric']} {value} after {best['steps']} steps; "
            f"{document['stopped_early']}/{len(document['trials'])} trials stopped early"
            + (f", {errors} raised an error" if errors else "")
        )
        title = f"ASHA: {document['optimizer']} on {document['task']}"
        return Summary(title, ("hyperparameter", "tuned", "drawn from"), rows, [line])

    def results_summary(self, results: dict[str, Any]) -> list[Summary]:
        return final.results_tables(results)

    def describe(self) -> dict[str, Any]:
        defaults = AshaConfig("digits-mlp", "adam").to_dict()
        return {
            "name": self.name,
            "summary": self.summary_line,
            "optimizers": list(asha_spaces.asha_optimizers()),
            "settings": {k: v for k, v in defaults.items() if k not in ("strategy", "task", "optimizer")},
            "options": AshaOptions.model_json_schema(),
            "unit": "max_t, grace_period and report_every count steps (loss evaluations)",
        }


STRATEGY = Asha()
