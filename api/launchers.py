"""Launchers start job drivers and reconcile what they see with the store.

Both share one loop (:meth:`Launcher.reconcile`, run every ``poll_interval`` seconds and after
each submit or cancel): cancel what was asked to stop, settle jobs whose driver ended, start
queued jobs while there is room. A job whose driver is gone while the store says ``running``
(the API or a node died) is put back in the queue and resumes from its last stored generation
with ``attempt + 1``.

* :class:`InProcessLauncher` (the embedded default) runs each driver as a local worker process,
  at most ``max_concurrent_jobs`` at once, the rest queued. On Linux a driver dies with the API
  (``PR_SET_PDEATHSIG``) so a restarted API never finds two drivers for one job. Each driver
  leads a session of its own; once it is gone, whatever of its local Ray is left in that session
  is killed (Ray reaps its GCS and raylet when the driver is killed, not its agents).
* :class:`QueueOnlyLauncher` stores jobs and runs none (to measure the API alone).
* :class:`RayJobsLauncher` submits ``python -m api.driver`` to a Ray cluster's Jobs API; the
  submission id is ``lodotune-<job id>-<attempt>``, so submitting twice is harmless.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .models import JobRow
from .settings import Settings
from .store import JobStore

LOG_TAIL_LINES = 20
SUBMIT_BATCH = 32  # ray-jobs: submissions per reconcile pass
TERMINATE_GRACE_SECONDS = 10.0


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


def driver_environment(settings: Settings) -> dict[str, str]:
    """What a driver must see to find the same store, artifacts and data as the API."""
    env = {
        "LODOTUNE_DATABASE_URL": settings.resolved_database_url,
        "LODOTUNE_ARTIFACT_DIR": str(settings.artifact_dir.resolve()),
        "LODOTUNE_EXECUTOR": settings.executor,
    }
    if settings.data_dir is not None:
        env["LODOTUNE_DATA_DIR"] = str(settings.data_dir)
    if settings.ray_address and settings.launcher == "inprocess":
        env["LODOTUNE_RAY_ADDRESS"] = settings.ray_address
    return env


def driver_command(job_id: str, attempt: int) -> list[str]:
    return ["-m", "api.driver", job_id, "--attempt", str(attempt)]


class Launcher:
    name = ""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous API left running, then reconcile in the background."""
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-launcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Reconcile now (after a submit or a cancel) rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except Exception as err:  # keep the loop alive; the next pass retries
                print(f"lodotune: reconcile failed: {type(err).__name__}: {err}", file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reconcile(self) -> None:
        with self._lock:
            running = self.store.with_status(("running",), launcher=self.name)
            for job in running:
                self._settle_running(job)
            self.store.cancel_queued(launcher=self.name)
            room = self._room(len(self.store.with_status(("running",), launcher=self.name)))
            if room > 0:
                for job in self.store.with_status(("queued",), launcher=self.name, limit=room):
                    self._launch(job, job.attempt + 1)

    def _requeue(self, job: JobRow, reason: str) -> None:
        print(f"lodotune: job {job.id} attempt {job.attempt}: {reason}; resuming", file=sys.stderr)
        self.store.update(job.id, only_if_status=("running",), status="queued", driver=None)

    # what each launcher supplies ----------------------------------------------------------------

    def _room(self, running: int) -> int:
        """How many queued jobs to start now, with ``running`` jobs running."""
        raise NotImplementedError

    def _launch(self, job: JobRow, attempt: int) -> None:
        raise NotImplementedError

    def _settle_running(self, job: JobRow) -> None:
        """Stop it if cancel was asked; settle it if its driver ended; requeue it if it is gone."""
        raise NotImplementedError


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_ray_leftovers(session: int) -> int:
    """SIGKILL the Ray processes left in the session a dead driver led; returns how many.

    Only processes of that session whose command is Ray's (``ray::…`` or a program under a
    ``/ray/`` folder), and only while no process ``session`` exists: a reused pid leads nothing here.
    """
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or (proc / str(session)).exists():
        return 0
    killed = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
            if int(fields[3]) == session and (command.startswith(b"ray::") or b"/ray/" in command):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile, or not ours to read
    return killed


class InProcessLauncher(Launcher):
    name = "inprocess"

    def __init__(self, store: JobStore, settings: Settings) -> None:
        super().__init__(store, settings)
        self._processes: dict[str, subprocess.Popen] = {}

    def _room(self, running: int) -> int:
        return self.settings.max_concurrent_jobs - running

    def _log_path(self, job: JobRow) -> Path:
        return Path(job.run_dir) / f"driver-{job.attempt}.log"

    def _launch(self, job: JobRow, attempt: int) -> None:
        if not self.store.start_attempt(job.id, attempt, driver=None):
            return
        job = self.store.get(job.id)
        log_path = self._log_path(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **driver_environment(self.settings)}
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *driver_command(job.id, attempt)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                start_new_session=True,  # its Ray's processes share the session: see kill_ray_leftovers
            )
        self._processes[job.id] = process
        self.store.update(job.id, driver=f"pid {process.pid}")

    def _settle_running(self, job: JobRow) -> None:
        process = self._processes.get(job.id)
        if process is None:  # started by an earlier API process: its driver died with it
            if job.driver and job.driver.startswith("pid "):
                kill_ray_leftovers(int(job.driver.removeprefix("pid ")))
            self._requeue(job, "driver gone")
            return
        code = process.poll()
        if code is None:
            if job.cancel_requested:
                self._terminate(process)
            return
        del self._processes[job.id]
        kill_ray_leftovers(process.pid)
        current = self.store.get(job.id)
        if current is None or current.status != "running":
            return  # the driver settled the job itself
        if current.cancel_requested:
            self.store.finish(job.id, "cancelled")
        else:
            log = self._log_path(current)
            text = log.read_text(errors="replace") if log.exists() else ""
            self.store.finish(job.id, "failed", error=f"driver exited with code {code}\n{_tail(text)}")

    @staticmethod
    def _terminate(process: subprocess.Popen) -> None:
        process.terminate()
        try:
            process.wait(TERMINATE_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        super().close()
        with self._lock:
            for process in self._processes.values():
                self._terminate(process)  # their jobs stay `running` and resume on the next start
                kill_ray_leftovers(process.pid)


class RayJobsLauncher(Launcher):
    name = "ray-jobs"

    def __init__(self, store: JobStore, settings: Settings, client: Any = None) -> None:
        super().__init__(store, settings)
        if not settings.ray_address:
            raise ValueError(
                "Invalid ray_address: None (allowed: the Ray head's Jobs API, e.g. http://ray-head:8265, "
                "set by LODOTUNE_RAY_ADDRESS)"
            )
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.settings.ray_address, headers=ray_auth_headers())
        return self._client

    @staticmethod
    def submission_id(job_id: str, attempt: int) -> str:
        return f"lodotune-{job_id}-{attempt}"

    def _room(self, running: int) -> int:
        return SUBMIT_BATCH  # the cluster queues jobs by the resources they reserve

    def _launch(self, job: JobRow, attempt: int) -> None:
        submission = self.submission_id(job.id, attempt)
        if not self.store.start_attempt(job.id, attempt, driver=submission):
            return
        try:
            self.client.submit_job(
                entrypoint=" ".join(["python", *driver_command(job.id, attempt)]),
                submission_id=submission,
                runtime_env={"env_vars": driver_environment(self.settings)},
                metadata={"lodotune_job": job.id, "attempt": str(attempt)},
                entrypoint_num_cpus=self.settings.driver_num_cpus,
            )
        except Exception as err:
            message = str(err)
            if "already exists" in message:  # a resubmit of the same attempt is fine
                return
            if any(code in message for code in ("401", "403")):
                self.store.finish(job.id, "failed", error=f"Ray refused the submission: {message}")
                return
            # the cluster is starting or unreachable: back to the queue, retried on the next pass
            self.store.update(
                job.id,
                status="queued",
                attempt=attempt - 1,
                driver=None,
                error=f"Ray Jobs submission failed, retrying: {message}",
            )

    def _settle_running(self, job: JobRow) -> None:
        submission = job.driver or self.submission_id(job.id, job.attempt)
        try:
            status = str(self.client.get_job_status(submission)).rsplit(".", 1)[-1]
        except Exception as err:
            if "does not exist" in str(err) or "404" in str(err):
                self._requeue(job, "Ray has no such job")
                return
            raise
        if status in ("PENDING", "RUNNING"):
            if job.cancel_requested:
                self.client.stop_job(submission)  # a PENDING stop may do nothing: the driver checks too
            return
        current = self.store.get(job.id)
        if current is None or current.status != "running":
            return
        if current.cancel_requested or status == "STOPPED":
            self.store.finish(
                job.id,
                "cancelled" if current.cancel_requested else "failed",
                error=None if current.cancel_requested else "stopped outside lodotune",
            )
            return
        logs = ""
        with contextlib.suppress(Exception):
            logs = self.client.get_job_logs(submission)
        self.store.finish(job.id, "failed", error=f"Ray job {submission} ended {status}\n{_tail(logs)}")


def ray_auth_headers() -> dict[str, str]:
    """Ray's bearer token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) when there is one."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        if path.is_file():
            token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


class QueueOnlyLauncher(Launcher):
    """Stores jobs and starts none: for measuring the API itself (bench/api_load.py)."""

    name = "queue"

    def _room(self, running: int) -> int:
        return 0

    def _settle_running(self, job: JobRow) -> None:
        pass


LAUNCHERS = {"inprocess": InProcessLauncher, "ray-jobs": RayJobsLauncher, "queue": QueueOnlyLauncher}


def make_launcher(store: JobStore, settings: Settings) -> Launcher:
    return LAUNCHERS[settings.launcher](store, settings)
