"""The job driver: ``python -m api.driver JOB_ID --attempt N`` runs one job against the store.

A launcher starts it: as a local worker process (``inprocess``) or as a Ray job (``ray-jobs``).
The in-process launcher may start it before its job (``--standby``: imports done, the service's
Ray joined and its workers started; :func:`standby`) and hand it the job on standard input.
It reads the job's spec from the store and hands it to the tuner's job runner
(:mod:`tuner.jobs`), with :class:`StoreSink` as the event sink: progress, every finished
generation (its GA state included) and every finished document are written to the store the
moment the runner reports them. The store is the source of truth: a restarted job continues from
the generations and documents the store holds (the run directory is rewritten from them, never
read back), so a job moved to another machine, or whose files were lost or damaged, continues
with identical seeds and result. A reproduce job is the exception: like ``lodotune reproduce`` it
reads its finished runs and GA studies back from its run directory (the store keeps its progress
and its report).

While it runs, a :class:`Heartbeat` thread writes ``jobs.heartbeat_at`` every
``LODOTUNE_HEARTBEAT_INTERVAL`` seconds: the launchers take a driver whose heartbeat is older than
``LODOTUNE_HEARTBEAT_TIMEOUT`` for hung. The driver reports the job's outcome itself (succeeded,
cancelled, or failed with the job's own error in one line, the traceback in its log); a driver that
ends without reporting one (killed, crashed) is resumed by its launcher as the next attempt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tuner import events as ev
from tuner.rundir import RunDir
from tuner.runtime import JobContext, Runtime

from .launchers import alive_path
from .models import JobRow
from .schemas import STORED_SPEC, EvaluateRequest, ReproduceRequest, TuneRequest
from .settings import Settings
from .store import JobStore


class Cancelled(Exception):
    """The job was cancelled while running: stop between trials, keep what is stored."""


class Superseded(Cancelled):
    """This driver's attempt is no longer the job's running one (a launcher took it for lost)."""


class StoreSink:
    """The event sink of a job run by the service: writes each event to the store as it happens,
    and stops the job (raises :class:`Cancelled`) at the next unit of work after a cancel, or
    (:class:`Superseded`) once ``attempt`` is no longer the job's running attempt."""

    def __init__(self, store: JobStore, job_id: str, attempt: int | None = None) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt

    def _check_cancel(self) -> None:
        current = self.store.get(self.job_id)
        if current is None or current.status != "running":
            raise Superseded
        if self.attempt is not None and current.attempt != self.attempt:
            raise Superseded
        if current.cancel_requested:
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
            case ev.StudyStarted(study=study, of=of):
                self._check_cancel()
                store.update(job_id, study=study, studies=of)
            case ev.StudyFinished():
                store.update(job_id, study=None)  # the job's own evaluation is no study's
            case ev.GenerationStarted(generation=g, of=of, population=population):
                self._check_cancel()
                # g generations are done: in a study after the first, its own (the count restarts)
                store.update(
                    job_id,
                    phase="tuning",
                    generation=g,
                    generations=of,
                    trials_done=0,
                    trials_total=population,
                )
            case ev.TrialFinished() | ev.EvaluationRunFinished():
                store.advance_trials(job_id)
            case ev.Checkpoint(kind="generation", record=record):
                store.record_generation(job_id, record)
            case ev.Checkpoint(kind="update", index=index, of=of):
                self._check_cancel()
                store.update(job_id, trials_done=index + 1, trials_total=of)
            case ev.DocumentReady(name=name, document=document):
                store.save_result(job_id, name, document)


def _without_generations(sink: StoreSink) -> ev.EventSink:
    def emit(event: ev.Event) -> None:
        if not (isinstance(event, ev.Checkpoint) and event.kind == "generation"):
            sink(event)

    return emit


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
        history = [row.record for row in self.store.generations(self.job.id)]
        if history:
            print(f"lodotune driver: resuming from {len(history)} stored generation(s)", file=sys.stderr)
        return JobContext(
            self.run_dir,
            self.runtime(),
            emit=StoreSink(self.store, self.job.id, attempt=self.job.attempt),
            resume=True,
            history=history,
            **resources,
        )

    def run(self) -> dict[str, Any]:
        from tuner.jobs import run_evaluate_job, run_reproduce_job, run_tune_job  # torch: seconds

        self.run_dir.root.mkdir(parents=True, exist_ok=True)
        if self.job.kind == "reproduce":
            job = ReproduceRequest.model_validate(self.job.spec, context=STORED_SPEC)
            # its GA runs (several, whose generation numbers repeat) resume from the run directory,
            # as the command line's do: their generations are not the store's
            sink = StoreSink(self.store, self.job.id, attempt=self.job.attempt)
            ctx = JobContext(self.run_dir, self.runtime(), emit=_without_generations(sink))
            return run_reproduce_job(job, ctx)
        if self.job.kind == "tune":
            job = TuneRequest.model_validate(self.job.spec, context=STORED_SPEC)
            ctx = self.context(
                num_cpus_per_trial=job.num_cpus_per_trial, num_gpus_per_trial=job.num_gpus_per_trial
            )
            tuned = self.store.result(self.job.id, "hyperparameters")  # tuned before a restart
            return run_tune_job(job, ctx, tuned=tuned)
        job = EvaluateRequest.model_validate(self.job.spec, context=STORED_SPEC)
        tuned = None
        if job.from_job is not None:
            tuned = self.store.result(job.from_job, "hyperparameters")
            if tuned is None:
                raise ValueError(f"Invalid from_job: {job.from_job} has no tuned hyperparameters")
        return run_evaluate_job(job, self.context(), tuned=tuned, tuned_source=f"job {job.from_job}")


class Heartbeat:
    """Writes the job's ``heartbeat_at`` every ``interval`` seconds from a thread of its own, so a
    driver busy in a long trial still shows it is alive, and a stopped (SIGSTOP) or hung one does
    not. Once a beat finds its attempt no longer running (a launcher took it for lost and resumed
    or settled the job), it calls ``on_superseded`` (default: SIGTERM to this process).

    ``alive``: a file touched as often by a second thread that never waits on the store, so the
    launcher on this host can tell a driver whose beats wait on the store's write lock from a hung
    one (:func:`api.launchers.alive_path`)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        attempt: int,
        interval: float,
        on_superseded: Callable[[], None] | None = None,
        alive: Path | None = None,
    ) -> None:
        self.store, self.job_id, self.attempt, self.interval = store, job_id, attempt, interval
        self.on_superseded = on_superseded or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.alive = alive
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name="lodotune-heartbeat", daemon=True)]
        if alive is not None:
            self._threads.append(threading.Thread(target=self._touch, name="lodotune-alive", daemon=True))

    def beat(self) -> bool:
        return self.store.heartbeat(self.job_id, self.attempt)

    def start(self) -> bool:
        """The first beat now, then one every ``interval``; returns whether the attempt is running."""
        alive = self.beat()
        if alive:
            for thread in self._threads:
                thread.start()
        return alive

    def _touch(self) -> None:
        assert self.alive is not None
        while True:
            with contextlib.suppress(OSError):
                self.alive.touch()
            if self._stop.wait(self.interval):
                return

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                alive = self.beat()
            except Exception as err:  # the store is busy or away: the next beat tries again
                from tuner.jobs import describe_error

                print(f"lodotune driver: heartbeat failed: {describe_error(err)}", file=sys.stderr)
                continue
            if not alive and not self._stop.is_set():
                print(
                    f"lodotune driver: attempt {self.attempt} is no longer the running one; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                self.on_superseded()
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=30)
        if self.alive is not None:
            with contextlib.suppress(OSError):
                self.alive.unlink()


def _terminate_gracefully(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds `with executor`, so a local Ray shuts down


def standby() -> list[str] | None:
    """``--standby``: do what every driver does before its job can start -- import the tuner
    (torch), and with the service's Ray join it and start its workers -- then wait for the job on
    standard input, one JSON line ``{"job_id", "attempt", "log"}``. Its output goes to the job's
    log from then on. Returns the job's arguments, or None when the input closes unused."""
    settings = Settings()
    import tuner.jobs  # noqa: F401  (torch: seconds)

    warm = 0
    if settings.executor == "ray" and settings.ray_address:
        import logging

        import ray

        from tuner.executors import warm_ray_workers

        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
        warm = warm_ray_workers(min(os.cpu_count() or 1, int(ray.cluster_resources().get("CPU", 1))))
    print(f"lodotune driver: standby {os.getpid()} ready ({warm} Ray workers started)", file=sys.stderr)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        return None
    order = json.loads(line)
    sys.stdout.flush()
    log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, sys.stdout.fileno())
    os.dup2(log, sys.stderr.fileno())
    os.close(log)
    return [order["job_id"], "--attempt", str(order["attempt"])]


def main(argv: list[str] | None = None) -> int:
    """Run one attempt of a job and report its outcome to the store: 0, or 1 after the job's own
    error (reported as ``failed``). A store error is not the job's: the driver exits without an
    outcome and its launcher resumes the job as the next attempt."""
    parser = argparse.ArgumentParser(prog="python -m api.driver", description=__doc__)
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--attempt", type=int)
    parser.add_argument("--standby", action="store_true", help="start now, take the job from stdin")
    args = parser.parse_args(argv)
    if args.standby:
        job_arguments = standby()
        if job_arguments is None:
            return 0
        args = parser.parse_args(job_arguments)
    if args.job_id is None or args.attempt is None:
        parser.error("JOB_ID and --attempt are required (or --standby)")
    signal.signal(signal.SIGTERM, _terminate_gracefully)
    settings = Settings()
    store = JobStore(settings.resolved_database_url)
    job = store.get(args.job_id)
    if job is None:
        print(f"no job {args.job_id} in the store", file=sys.stderr)
        return 2
    if job.attempt != args.attempt or job.status != "running":
        print(f"job {job.id} is {job.status} at attempt {job.attempt}: nothing to do", file=sys.stderr)
        return 0
    print(
        f"lodotune driver: job {job.id} attempt {args.attempt} pid {os.getpid()} on {socket.gethostname()}",
        file=sys.stderr,
        flush=True,
    )
    alive = alive_path(job.run_dir, args.attempt)
    with contextlib.suppress(OSError):
        alive.parent.mkdir(parents=True, exist_ok=True)
    heartbeat = Heartbeat(store, job.id, args.attempt, settings.heartbeat_interval, alive=alive)
    if not heartbeat.start():
        print(f"job {job.id} attempt {args.attempt} is no longer running: nothing to do", file=sys.stderr)
        return 0
    # from the first second the job says what it does; the tuner (torch) is imported after this
    store.update(job.id, driver=job.driver or f"{socket.gethostname()}:{os.getpid()}", phase="starting")
    if settings.ray_address and settings.executor == "ray" and job.launcher == "inprocess":
        print(f"lodotune driver: joining Ray at {settings.ray_address}", file=sys.stderr, flush=True)
    outcome, error = "succeeded", None
    try:
        Driver(store, job, settings).run()
    except Superseded:
        outcome = "superseded"
    except Cancelled:
        outcome = "cancelled"
    except SQLAlchemyError:
        traceback.print_exc()
        raise  # the store failed, not the job: no outcome, the launcher retries
    except Exception as err:
        from tuner.jobs import describe_error

        traceback.print_exc()  # the whole story goes to the driver's log; the job keeps one line
        outcome, error = "failed", describe_error(err)
    finally:
        heartbeat.stop()  # before the outcome: a beat after it would read as "superseded"
    if outcome != "superseded":
        store.finish(job.id, outcome, error=error, attempt=args.attempt)
    print(f"lodotune driver: job {job.id} attempt {args.attempt} {outcome}", file=sys.stderr, flush=True)
    return 1 if outcome == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
