"""The job driver: ``python -m api.driver JOB_ID --attempt N`` runs one job against the store.

A launcher starts it: as a local worker process (``inprocess``) or as a Ray job (``ray-jobs``).
It reads the job's spec from the store, runs the tuner (GA, ASHA or one-pass, then the final
evaluation) or an evaluation, and writes progress to the store as it goes: trial counts, and every
finished generation with its GA state. The store is the source of truth: before resuming, the
run directory is rebuilt from the stored generations, so a job moved to another machine or whose
files were lost continues from its last stored generation with identical seeds and result.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import socket
import sys
import traceback
from typing import Any

import lodo
import schedules
from tuner.asha import tune_asha
from tuner.evaluate import evaluate
from tuner.executors import make_executor
from tuner.final import FinalEvaluation, reference_values, tuned_values, write_bootstrap
from tuner.onepass import evaluate_onepass, tune_onepass
from tuner.rundir import RunDir, read_json, write_json
from tuner.tuning import TuneConfig, tune

from .models import JobRow
from .schemas import TuneRequest, final_length, strategy_config
from .settings import Settings
from .store import JobStore, json_safe


class Cancelled(Exception):
    """The job was cancelled while running: stop between trials, keep what is stored."""


def tune_config(spec: dict[str, Any]) -> TuneConfig:
    """The GA configuration of a validated TuneRequest body."""
    plan = (
        schedules.schedule_for(spec["task"], spec["schedule"])
        .scaled(spec["step_scale"])
        .with_overrides(generations=spec["generations"], population=spec["population"])
    )
    space = schedules.space_for(
        spec["optimizer"], normalization=spec["normalization"], decay_transform=spec["decay_transform"]
    )
    return TuneConfig(
        spec["task"],
        spec["optimizer"],
        plan,
        space,
        seed=spec["seed"],
        task_options=dict(spec["task_options"]),
        device=spec["device"],
    )


def sync_generations(store: JobStore, job: JobRow, run_dir: RunDir) -> None:
    """Make the run directory and the store hold the same finished generations.

    Stored generations are written back to files (the store wins); a generation file the store
    lacks (the driver died between writing it and storing it) is stored.
    """
    stored = {row.generation: row.record for row in store.generations(job.id)}
    for g, record in stored.items():
        path = run_dir.generation_path(g)
        if not path.exists() or json_safe(read_json(path)) != record:
            write_json(path, record)
    for record in run_dir.finished_generations():
        if record["generation"] not in stored:
            store.record_generation(job.id, record)


class Driver:
    def __init__(self, store: JobStore, job: JobRow, settings: Settings) -> None:
        self.store, self.job, self.settings = store, job, settings
        self.run_dir = RunDir(job.run_dir)
        self.spec = job.spec

    # progress ----------------------------------------------------------------------------------

    def _check_cancel(self) -> None:
        current = self.store.get(self.job.id)
        if current is None or current.cancel_requested or current.status != "running":
            raise Cancelled

    def on_tuning_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "generation":
            self._check_cancel()
            self.store.update(
                self.job.id,
                phase="tuning",
                generations=payload["of"],
                trials_done=0,
                trials_total=payload["population"],
            )
        elif event == "trial":
            self._advance_trials()
        elif event == "told":
            record = read_json(self.run_dir.generation_path(payload["generation"]))
            self.store.record_generation(self.job.id, record)

    def _advance_trials(self) -> None:
        current = self.store.get(self.job.id)
        if current is not None:
            self.store.update(self.job.id, trials_done=current.trials_done + 1)

    def on_evaluation_run(self, index: int, result: Any) -> None:
        self._advance_trials()

    # phases ------------------------------------------------------------------------------------

    def executor(self):
        spec = self.spec
        options: dict[str, Any] = {}
        if self.settings.executor == "ray":
            options = {
                "num_cpus_per_trial": spec.get("num_cpus_per_trial", 1.0),
                "num_gpus_per_trial": spec.get("num_gpus_per_trial", 0.0),
            }
            if self.job.launcher == "ray-jobs":
                options["address"] = "auto"  # inside a Ray job: the cluster that runs it
            elif self.settings.ray_address:
                options["address"] = self.settings.ray_address
            else:
                options["temp_dir"] = str(self.run_dir.root / "ray")
        return make_executor(self.settings.executor, **options)

    def run(self) -> None:
        self.run_dir.root.mkdir(parents=True, exist_ok=True)
        with self.executor() as pool:
            if self.job.kind == "tune":
                self.run_tuning(pool)
            else:
                self.run_evaluation(
                    pool, self.evaluation_entries(), task_options=self.evaluation_task_options()
                )

    def run_tuning(self, pool) -> None:
        spec = self.spec
        document = self.store.result(self.job.id, "hyperparameters")  # tuned before a restart
        if spec["strategy"] == "onepass":
            self.run_onepass(document)
            return
        if spec["strategy"] == "asha":
            config = strategy_config(TuneRequest.model_validate(spec))
            document = document or tune_asha(
                config,
                self.run_dir,
                progress=self.on_asha_event,
                resume=self.run_dir.config_path.exists(),  # an earlier attempt's finished trials
            )
        else:
            config = tune_config(spec)
            if document is None:
                sync_generations(self.store, self.job, self.run_dir)
                resume = self.run_dir.config_path.exists()
                if not resume and self.store.generations(self.job.id):
                    write_json(self.run_dir.config_path, config.to_dict())
                    resume = True
                document = tune(config, self.run_dir, pool, resume=resume, progress=self.on_tuning_event)
        self.store.save_result(self.job.id, "hyperparameters", document)
        if not spec["evaluate"]:
            return
        final = FinalEvaluation.after_tuning(
            config, document, spec["baselines"], step_scale=spec["step_scale"]
        )
        results = self.run_evaluation(
            pool,
            {name: (values, final.sources[name]) for name, values in final.entries.items()},
            steps=final.steps,
            step_scale=final.step_scale,
            task_options=final.task_options,
        )
        if spec["strategy"] == "asha":
            write_bootstrap(results, self.run_dir.evaluation_dir, spec["seed"])

    def _fresh(self, run):
        """Run a strategy that cannot resume from an empty run directory (driver logs and the
        live Ray's temp dir kept)."""
        for path in self.run_dir.root.iterdir():
            if not path.name.startswith("driver-") and path.name != "ray":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return run()

    def on_asha_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "trial":
            self.store.update(
                self.job.id, phase="tuning", trials_done=payload["index"] + 1, trials_total=payload["of"]
            )

    def on_onepass_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "update":
            self._check_cancel()
            self.store.update(
                self.job.id, phase="tuning", trials_done=payload["update"] + 1, trials_total=payload["of"]
            )

    def run_onepass(self, document: dict[str, Any] | None) -> None:
        spec = self.spec
        config = strategy_config(TuneRequest.model_validate(spec))
        if document is None:
            document = self._fresh(lambda: tune_onepass(config, self.run_dir, progress=self.on_onepass_event))
            self.store.save_result(self.job.id, "hyperparameters", document)
        if not spec["evaluate"]:
            return
        self._check_cancel()
        self.store.update(self.job.id, phase="evaluation", trials_done=0, trials_total=spec["seeds"])
        results = evaluate_onepass(
            config,
            seeds=spec["seeds"],
            out_dir=self.run_dir.evaluation_dir,
            progress=lambda index, episode: self._advance_trials(),
        )
        self.store.save_result(self.job.id, "results", results)

    @functools.cached_property
    def from_job_document(self) -> dict[str, Any] | None:
        """The hyperparameters document of the job an evaluation names (``from_job``), if any."""
        source = self.spec.get("from_job")
        if not source:
            return None
        document = self.store.result(source, "hyperparameters")
        if document is None:
            raise ValueError(f"Invalid from_job: {source} has no tuned hyperparameters")
        return document

    def evaluation_entries(self) -> dict[str, tuple[dict[str, float], str]]:
        """name → (values, source): given values as they are; a tuned job's and Table 6's values
        as the final runs use them (halved where the task's schedule says, lodo.md §3.5)."""
        spec = self.spec
        from_job: tuple[dict[str, float], str] | None = None
        source_optimizer = None
        document = self.from_job_document
        if document is not None:
            source_optimizer = document["optimizer"]
            from_job = tuned_values(document, f"job {spec['from_job']}")
        final_runs = schedules.schedule_for(spec["task"])
        entries = {}
        for name in spec["optimizers"]:
            if name in spec["hyperparameters"]:
                defaults = lodo.get(name).defaults
                entries[name] = ({**defaults, **spec["hyperparameters"][name]}, "given")
            elif name == source_optimizer:
                entries[name] = from_job
            else:
                entries[name] = reference_values(spec["task"], name, spec["tuned"], schedule=final_runs)
        return entries

    def evaluation_task_options(self) -> dict[str, Any]:
        """The request's task options; without any, those of the ``from_job`` run on the same task
        (the batch size ASHA tuned, the options a GA job was tuned with)."""
        spec = self.spec
        document = self.from_job_document
        if spec["task_options"] or document is None:
            return dict(spec["task_options"])
        return dict(document.get("task_options") or {}) if document.get("task") == spec["task"] else {}

    def run_evaluation(
        self, pool, entries, *, steps: int | None = None, step_scale: float | None = None, task_options=None
    ) -> dict[str, Any]:
        spec = self.spec
        if step_scale is None:
            step_scale = spec["step_scale"]
        if steps is None:
            steps = spec.get("steps") or final_length(spec["task"], step_scale)
        self._check_cancel()
        seeds = spec["seeds"]
        self.store.update(self.job.id, phase="evaluation", trials_done=0, trials_total=len(entries) * seeds)
        document = evaluate(
            spec["task"],
            {name: values for name, (values, _) in entries.items()},
            steps=steps,
            seeds=seeds,
            executor=pool,
            out_dir=self.run_dir.evaluation_dir,
            job_seed=spec["seed"],
            task_options=spec["task_options"] if task_options is None else task_options,
            device=spec["device"],
            step_scale=step_scale,
            sources={name: source for name, (_, source) in entries.items()},
            progress=self.on_evaluation_run,
        )
        self.store.save_result(self.job.id, "results", document)
        return document


def _terminate_gracefully(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds `with executor`, so a local Ray shuts down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.driver", description=__doc__)
    parser.add_argument("job_id")
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate_gracefully)
    settings = Settings()
    store = JobStore(settings.resolved_database_url)
    job = store.get(args.job_id)
    if job is None:
        print(f"no job {args.job_id} in {store.url}", file=sys.stderr)
        return 2
    if job.attempt != args.attempt or job.status != "running":
        print(f"job {job.id} is {job.status} at attempt {job.attempt}: nothing to do", file=sys.stderr)
        return 0
    store.update(job.id, driver=job.driver or f"{socket.gethostname()}:{os.getpid()}")
    try:
        Driver(store, job, settings).run()
    except Cancelled:
        store.finish(job.id, "cancelled")
        return 0
    except Exception as err:
        store.finish(job.id, "failed", error=f"{type(err).__name__}: {err}\n{_tail(traceback.format_exc())}")
        raise
    store.finish(job.id, "succeeded")
    return 0


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
