"""Independent GA studies: a tune job of K runs of the GA from K seeds, scored on its median study,
as the benchmarks that run several independent tuning studies score them (AlgoPerf's external
tuning), so a user sees whether one run's result was luck.

Study k tunes at the k-th of :func:`tuner.ga.study_seeds` (study 0 at the job seed: it is the
single-study run of the same job) and then evaluates its tuned set alone over the job's evaluation
seeds, the same runs for every study, so studies differ by what they tuned and not by the runs
that score them. The job's tuned set is the study whose mean window loss is the median: for an even
K the lower (better) of the two middle ones, as ``statistics.median_low``, because the job must
report one study's values and an average of two tuned sets was tuned by neither; ties go to the
lower study index and a study with no finite run ranks last. The job's own evaluation
(:mod:`tuner.jobs`: the strategy's, the baselines included, once) then reads that study's runs
back instead of running them again.

Layout: ``RUN_DIR/studies/<k>/`` is study k's run directory (its GA run and the evaluation of its
tuned set), ``RUN_DIR/studies.json`` every study and the spread, ``RUN_DIR/search.png`` every study's search
in one figure, ``RUN_DIR/hyperparameters.json``
the median study's document with ``study``, ``studies`` and ``studies_document`` added
(:mod:`tuner.rundir`).

Resume: both halves of a study resume (its generations from the store's records, which carry
``"study": k``, or from its directory; its evaluation from the runs it kept), so a restarted job
goes through every study again: the finished ones are read back, the one that was running continues
after its last stored generation, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import events as ev
from . import ga, plots
from .rundir import read_json, versions, write_array, write_json
from .runtime import JobContext
from .summary import spread
from .tables import Summary

if TYPE_CHECKING:
    from .specs import TuneJob
    from .strategies import Strategy

STUDIES_VERSION = 1
SPREAD_RESAMPLES = 2000
SPREAD_LEVEL = 0.95
SEED_RULE = (
    "study 0: the job seed; study k >= 1: SeedSequence hashing of (job seed, study stream, k), "
    "redrawn while equal to an earlier study's (tuner.ga.study_seeds)"
)
MEDIAN_RULE = (
    "the study whose tuned set has the median mean window loss over the job's seeds; for an even "
    "number of studies the lower of the two middle ones; ties by study index; no finite run ranks last"
)


@dataclasses.dataclass(frozen=True)
class Study:
    """One finished study: its index, seed, hyperparameters document and evaluation document."""

    index: int
    seed: int
    tuned: dict[str, Any]
    results: dict[str, Any]

    @property
    def evaluation(self) -> dict[str, Any]:
        """The tuned optimizer's row of the study's evaluation."""
        return self.results["optimizers"][self.tuned["optimizer"]]

    @property
    def window_loss(self) -> float:
        mean = self.evaluation["mean"]
        return math.inf if mean is None else mean


def run_studies(job: TuneJob, strategy: Strategy, ctx: JobContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune and evaluate each of the job's studies (or read them back); returns the job's
    hyperparameters document (the median study's) and the studies document, both also written to
    the run directory, whose ``evaluation/runs`` then holds the median study's finished runs."""
    seeds = ga.study_seeds(job.seed, job.studies)
    config = {"version": STUDIES_VERSION, "studies": job.studies, "job_seed": job.seed, "study_seeds": seeds}
    ctx.run_dir.claim(config, resume=ctx.resume, stored=ctx.history is not None)
    studies = [_run_study(job, strategy, ctx, k, seed) for k, seed in enumerate(seeds)]
    median = median_study(studies)
    document = _studies_document(job, studies, median)
    write_json(ctx.run_dir.studies_path, document)
    plots.plot_search(
        [ctx.run_dir.study(s.index).finished_generations() for s in studies],
        ctx.run_dir.search_plot_path,
        title=f"{job.task}: {job.studies} GA studies of {job.optimizer} (median: study {median.index})",
        labels=[f"study {s.index}" + (" (median)" if s is median else "") for s in studies],
    )
    tuned = {
        **median.tuned,
        "study": median.index,
        "studies": job.studies,
        "studies_document": "studies.json",
    }
    write_json(ctx.run_dir.hyperparameters_path, tuned)
    _keep_runs(ctx.run_dir.study(median.index).evaluation_dir / "runs", ctx.evaluation_path / "runs")
    return tuned, document


def median_study(studies: list[Study]) -> Study:
    """The study of median window loss: of an even number, the lower of the two middle ones;
    ties by index; a study with no finite run ranks last (the module's docstring says why)."""
    return sorted(studies, key=lambda s: (s.window_loss, s.index))[(len(studies) - 1) // 2]


def _run_study(job: TuneJob, strategy: Strategy, ctx: JobContext, index: int, seed: int) -> Study:
    run_dir = ctx.run_dir.study(index)
    ctx.emit(ev.StudyStarted(index, job.studies, seed))
    study_ctx = JobContext(
        run_dir,
        ctx.runtime,
        emit=_stamped(ctx.emit, index, job.studies),
        # a study the interrupted run never reached starts afresh
        resume=ctx.resume and run_dir.config_path.exists(),
        history=None
        if ctx.history is None
        else [_unstamped(r) for r in ctx.history if r.get("study") == index],
        num_cpus_per_trial=ctx.num_cpus_per_trial,
        num_gpus_per_trial=ctx.num_gpus_per_trial,
        vectorize=ctx.vectorize,
        members_per_task=ctx.members_per_task,
        executor_override=ctx.executor(),  # one executor (one Ray) for every study, closed by the job
    )
    # tuned from the study's seed; evaluated from the job's, so every study is scored on the same runs
    tuned = strategy.tune(job.model_copy(update={"seed": seed, "baselines": [], "studies": 1}), study_ctx)
    results = strategy.evaluate(job.model_copy(update={"baselines": [], "studies": 1}), tuned, study_ctx)
    study = Study(index, seed, tuned, results)
    ctx.emit(ev.StudyFinished(index, job.studies, study.evaluation["mean"], _study_line(study, job.studies)))
    return study


def _stamped(emit: ev.EventSink, index: int, of: int) -> ev.EventSink:
    """The job's sink for a study's events: a generation record names its study (the store keeps
    the studies' generations apart by it) and its line says which study it is."""

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.Checkpoint) and event.kind == "generation":
            event = dataclasses.replace(
                event,
                record={**event.record, "study": index},
                summary=f"study {index + 1}/{of}: {event.summary}",
            )
        emit(event)

    return sink


def _unstamped(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as the study's GA wrote it (its file holds no study index)."""
    return {k: v for k, v in record.items() if k != "study"}


def _keep_runs(source: Path, target: Path) -> None:
    """Copy a study's finished evaluation runs where the job's evaluation looks for them
    (:class:`tuner.evaluate.RunStore`: a run is its ``.json`` with the ``.npy`` curve beside it,
    and counts as finished once the JSON exists, so the curve is copied first)."""
    for meta in sorted(source.glob("*.json")):
        curve = meta.with_suffix(".npy")
        write_array(target / curve.name, np.load(curve))
        write_json(target / meta.name, read_json(meta))


def _study_line(study: Study, of: int) -> str:
    e = study.evaluation
    loss = "no finite run" if e["mean"] is None else f"{e['mean']:.6g} ± {e['std']:.2g}"
    flags = f", {e['diverged']}/{e['runs']} diverged" if e["diverged"] else ""
    flags += f", {e['errors']}/{e['runs']} errors" if e["errors"] else ""
    values = ", ".join(f"{k}={v:.4g}" for k, v in study.tuned["hyperparameters"].items())
    return f"study {study.index + 1}/{of} (seed {study.seed}): window loss {loss}{flags}; {values}"


def _studies_document(job: TuneJob, studies: list[Study], median: Study) -> dict[str, Any]:
    def spread_of(values: list[float | None]) -> dict[str, Any]:
        return spread(values, resamples=SPREAD_RESAMPLES, level=SPREAD_LEVEL, seed=job.seed)

    names = list(median.tuned["hyperparameters"])
    scored = median.results
    return {
        "version": STUDIES_VERSION,
        "task": job.task,
        "optimizer": job.optimizer,
        "studies": job.studies,
        "job_seed": job.seed,
        "seed_rule": SEED_RULE,
        "median_study": median.index,
        "median_rule": MEDIAN_RULE,
        "evaluation": {"seeds": scored["seeds"], "steps": scored["steps"], "window": scored["window"]},
        "per_study": [
            {
                "study": s.index,
                "seed": s.seed,
                "run_dir": f"studies/{s.index}",
                "hyperparameters": dict(s.tuned["hyperparameters"]),
                "window_loss": {"mean": s.evaluation["mean"], "std": s.evaluation["std"]},
                "diverged": s.evaluation["diverged"],
                "errors": s.evaluation["errors"],
                "runs": s.evaluation["runs"],
            }
            for s in studies
        ],
        "spread": {
            "window_loss": spread_of([s.evaluation["mean"] for s in studies]),
            "hyperparameters": {
                n: spread_of([s.tuned["hyperparameters"][n] for s in studies]) for n in names
            },
        },
        "bootstrap": {
            "resamples": SPREAD_RESAMPLES,
            "level": SPREAD_LEVEL,
            "seed": job.seed,
            "interval": "percentile interval of the medians of resamples with replacement",
        },
        "versions": versions(),
    }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def studies_tables(document: dict[str, Any]) -> list[Summary]:
    """A studies document as tables: the spread of the window loss and of each tuned value, and
    one row per study (the median one marked)."""
    spreads = {"window loss": document["spread"]["window_loss"], **document["spread"]["hyperparameters"]}
    level = f"{document['bootstrap']['level']:.0%}"
    rows = [
        (
            name,
            _number(s["median"]),
            f"{_number(s['q25'])} – {_number(s['q75'])}",
            f"{_number(s['min'])} – {_number(s['max'])}",
            f"{_number(s['ci_low'])} – {_number(s['ci_high'])}",
            f"{s['n']}/{document['studies']}",
        )
        for name, s in spreads.items()
    ]
    columns = ("quantity", "median", "IQR (q25 – q75)", "min – max", f"{level} CI of the median", "studies")
    title = f"{document['studies']} studies of {document['optimizer']} on {document['task']}"
    boot = document["bootstrap"]
    notes = [
        f"median study: {document['median_study']} (by window loss; of an even number, the lower "
        f"middle one), whose values are hyperparameters.json; CI: percentile bootstrap, "
        f"{boot['resamples']} resamples, seed {boot['seed']}"
    ]
    names = list(document["spread"]["hyperparameters"])
    per_study = [
        (
            f"{s['study']}" + (" (median)" if s["study"] == document["median_study"] else ""),
            str(s["seed"]),
            "no finite run"
            if s["window_loss"]["mean"] is None
            else f"{s['window_loss']['mean']:.6g} ± {s['window_loss']['std']:.2g}",
            f"{s['diverged']}/{s['runs']}",
            *(f"{s['hyperparameters'][n]:.4g}" for n in names),
        )
        for s in document["per_study"]
    ]
    return [
        Summary(f"{title}: spread", columns, rows, notes),
        Summary(
            f"{title}: each study",
            ("study", "seed", "window loss (mean ± std)", "diverged", *names),
            per_study,
        ),
    ]
