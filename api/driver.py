"""The job driver: ``python -m api.driver JOB_ID --attempt N`` runs one job against the store.

A launcher starts it: as a local worker process (``inprocess``) or as a Ray job (``ray-jobs``).
It reads the job's spec from the store and hands it to the tuner's job runner
(:mod:`tuner.jobs`), with :class:`StoreSink` as the event sink: progress, every finished
generation (its GA state included) and every finished document are written to the store the
moment the runner reports them. The store is the source of truth: a restarted job continues from
the generations and documents the store holds (the run directory is rewritten from them, never
read back), so a job moved to another machine, or whose files were lost or damaged, continues
with identical seeds and result.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import traceback
from typing import Any

from tuner import events as ev
from tuner.jobs import describe_error, run_evaluate_job, run_tune_job
from tuner.rundir import RunDir
from tuner.runtime import JobContext, Runtime

from .models import JobRow
from .schemas import EvaluateRequest, TuneRequest
from .settings import Settings
from .store import JobStore


class Cancelled(Exception):
    """The job was cancelled while running: stop between trials, keep what is stored."""


class StoreSink:
    """The event sink of a job run by the service: writes each event to the store as it happens,
    and stops the job (raises :class:`Cancelled`) at the next unit of work after a cancel."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def _check_cancel(self) -> None:
        current = self.store.get(self.job_id)
        if current is None or current.cancel_requested or current.status != "running":
            raise Cancelled

    def __call__(self, event: ev.Event) -> None:
        store, job_id = self.store, self.job_id
        match event:
            case ev.PhaseStarted(phase=phase, unit="generations", total=total):
                self._check_cancel()
                store.update(job_id, phase=phase, generations=total)
            case ev.PhaseStarted(phase=phase, total=total):
                self._check_cancel()
                store.update(job_id, phase=phase, trials_done=0, trials_total=total)
            case ev.GenerationStarted(of=of, population=population):
                self._check_cancel()
                store.update(job_id, phase="tuning", generations=of, trials_done=0, trials_total=population)
            case ev.TrialFinished() | ev.EvaluationRunFinished():
                store.advance_trials(job_id)
            case ev.Checkpoint(kind="generation", record=record):
                store.record_generation(job_id, record)
            case ev.Checkpoint(kind="update", index=index, of=of):
                self._check_cancel()
                store.update(job_id, trials_done=index + 1, trials_total=of)
            case ev.DocumentReady(name=name, document=document):
                store.save_result(job_id, name, document)


class Driver:
    def __init__(self, store: JobStore, job: JobRow, settings: Settings) -> None:
        self.store, self.job, self.settings = store, job, settings
        self.run_dir = RunDir(job.run_dir)

    def runtime(self) -> Runtime:
        # inside a Ray job: the cluster that runs it
        address = "auto" if self.job.launcher == "ray-jobs" else self.settings.ray_address or None
        return Runtime(executor=self.settings.executor, ray_address=address)

    def context(self, **resources: float) -> JobContext:
        """A restart continues from what the store holds (nothing, on a first attempt)."""
        return JobContext(
            self.run_dir,
            self.runtime(),
            emit=StoreSink(self.store, self.job.id),
            resume=True,
            history=[row.record for row in self.store.generations(self.job.id)],
            **resources,
        )

    def run(self) -> dict[str, Any]:
        self.run_dir.root.mkdir(parents=True, exist_ok=True)
        if self.job.kind == "tune":
            job = TuneRequest.model_validate(self.job.spec)
            ctx = self.context(
                num_cpus_per_trial=job.num_cpus_per_trial, num_gpus_per_trial=job.num_gpus_per_trial
            )
            tuned = self.store.result(self.job.id, "hyperparameters")  # tuned before a restart
            return run_tune_job(job, ctx, tuned=tuned)
        job = EvaluateRequest.model_validate(self.job.spec)
        tuned = None
        if job.from_job is not None:
            tuned = self.store.result(job.from_job, "hyperparameters")
            if tuned is None:
                raise ValueError(f"Invalid from_job: {job.from_job} has no tuned hyperparameters")
        return run_evaluate_job(job, self.context(), tuned=tuned, tuned_source=f"job {job.from_job}")


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
        store.finish(job.id, "failed", error=f"{describe_error(err)}\n{_tail(traceback.format_exc())}")
        raise
    store.finish(job.id, "succeeded")
    return 0


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
