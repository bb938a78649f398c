"""Launchers start job drivers and reconcile what they see with the store.

Both share one loop (:meth:`Launcher.reconcile`, run every ``poll_interval`` seconds, after each
submit or cancel, and the moment a local driver exits): cancel what was asked to stop, settle jobs
whose driver ended, start queued jobs while there is room.

Supervision. A driver reports its job's outcome itself (succeeded, cancelled, or failed with the
job's own error: never retried). A driver that ends without reporting one -- any exit code, any
signal, SIGKILL (the OOM killer) and SIGTERM included -- or whose heartbeat (``jobs.heartbeat_at``,
written by the driver every ``heartbeat_interval``) is older than ``heartbeat_timeout`` (its
process group is then SIGKILLed, which stops a SIGSTOPped driver too) has *vanished*: the job goes
back to the queue and resumes from its stored generations as ``attempt + 1``, each lost attempt
recorded in ``jobs.attempts``, until ``max_attempts`` are lost; then it is ``failed`` with every
attempt's reason. A driver lost because the API process running it stopped is not counted.

Ownership. Any number of API processes may share one store. Each names itself (``host:pid:start
time``) and a job belongs to one of them at a time through a lease (``lease_owner``,
``lease_expires_at``): every move of a job -- launch, requeue, settle -- is one compare-and-set
UPDATE that succeeds only while the job is in the state and attempt it was read in and its lease is
free, the caller's, expired, or held by an API process known dead (same host, process gone). The
holder renews its leases every ``lease_ttl / 3`` seconds. A process settles only jobs whose lease
it may take; for a job launched elsewhere the heartbeat says whether its driver lives (on the same
host the driver's process is checked too).

* :class:`InProcessLauncher` (the embedded default) runs each driver as a local worker process,
  at most ``max_concurrent_jobs`` at once per API process, the rest queued. On Linux a driver dies
  with the API (``PR_SET_PDEATHSIG``). Each driver leads a session of its own; once it is gone,
  whatever of its local Ray is left in that session is killed (Ray reaps its GCS and raylet when the
  driver is killed, not its agents). A thread waits on each driver, so it is reaped (no zombie) and
  its job settled the moment it exits. While no driver runs, or a job waits for room, it keeps one
  standby driver started ahead (``standby_driver``): the next job runs on it, its imports done and
  its Ray workers up (while a job runs they start only once its trials leave CPUs free).
  With executor ``ray`` and no ``ray_address`` the launcher keeps one local Ray for its whole life
  (:class:`ServiceRay`, ``LODOTUNE_SHARED_RAY``): every driver joins it in under a second rather
  than starting its own; one that died is replaced at the next launch (a job whose Ray cannot
  start fails with that one line); it is stopped, temp dir and all, on close.
* :class:`QueueOnlyLauncher` stores jobs and runs none (to measure the API alone).
* :class:`RayJobsLauncher` submits ``python -m api.driver`` to a Ray cluster's Jobs API; the
  submission id is ``lodotune-<job id>-<attempt>``, so submitting twice is harmless.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import JobRow, utcnow
from .settings import Settings
from .store import JobStore

LOG_TAIL_LINES = 20
SUBMIT_BATCH = 32  # ray-jobs: submissions per reconcile pass
TERMINATE_GRACE_SECONDS = 10.0
STANDBY_RETRY_SECONDS = 60.0  # after a standby driver exited unused, before the next is started
DRIVER_START_GRACE_SECONDS = 60.0  # the wait for a driver's first heartbeat (it imports torch first)
SERVER_STOPPED = "the API process running its driver stopped"  # a loss not counted against the job


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


def driver_environment(settings: Settings, service_ray: ServiceRay | None = None) -> dict[str, str]:
    """What a driver must see to find the same store, artifacts and data as the API (and the
    service's own Ray, with its token, when there is one)."""
    env = {
        "LODOTUNE_DATABASE_URL": settings.resolved_database_url,
        "LODOTUNE_ARTIFACT_DIR": str(settings.artifact_dir.resolve()),
        "LODOTUNE_EXECUTOR": settings.executor,
        "LODOTUNE_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
    }
    if settings.data_dir is not None:
        env["LODOTUNE_DATA_DIR"] = str(settings.data_dir)
    if settings.ray_address and settings.launcher == "inprocess":
        env["LODOTUNE_RAY_ADDRESS"] = settings.ray_address
    if service_ray is not None and service_ray.address is not None:
        env.update(service_ray.driver_environment())
    return env


def driver_command(job_id: str, attempt: int) -> list[str]:
    return ["-m", "api.driver", job_id, "--attempt", str(attempt)]


STANDBY_COMMAND = ["-m", "api.driver", "--standby"]


def alive_path(run_dir: str | Path, attempt: int) -> Path:
    """The file a driver touches every heartbeat interval from a thread that never waits on the
    store: on one host it tells a driver that waits for the store's write lock (SQLite has one
    for the whole file: a stopped driver inside a write holds it) from a hung one."""
    return Path(run_dir) / f".driver-{attempt}.alive"


# processes ------------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of live process ``pid`` (clock ticks after boot); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _pid_alive(pid: int) -> bool:
    if sys.platform.startswith("linux"):
        return _process_start(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def api_process_id() -> str:
    """This API process's name in leases: ``host:pid:start time``, unique among a host's processes."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or uuid.uuid4().hex[:12]}"


def _owner_host(owner: str) -> str:
    return owner.rsplit(":", 2)[0]


def owner_dead_here(owner: str, host: str) -> bool:
    """Whether the API process ``owner`` ran on ``host`` (this one) and is gone."""
    try:
        owner_host, pid, start = owner.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if owner_host != host:
        return False
    if sys.platform.startswith("linux"):
        return _process_start(pid_number) != start  # gone, a zombie, or its pid reused
    return not _pid_alive(pid_number)


def _driver_pid(driver: str | None) -> int | None:
    """The pid in a launcher's ``pid N start T`` driver field."""
    if driver and driver.startswith("pid "):
        with contextlib.suppress(ValueError):
            return int(driver.removeprefix("pid ").split()[0])
    return None


def _is_driver_of(pid: int, job: JobRow) -> bool:
    """Whether ``pid`` is a live driver of ``job`` (not a zombie, not a reused pid): a driver
    process started when the launcher recorded, or (a record without the start) named the job."""
    if not sys.platform.startswith("linux"):
        return _pid_alive(pid)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    start = _process_start(pid)
    if start is None or b"api.driver" not in command:
        return False
    recorded = (job.driver or "").split()
    if len(recorded) == 4 and recorded[2] == "start":
        return recorded[3] == start
    return job.id.encode() in command


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a driver and what it started); SIGKILL also ends a
    stopped (SIGSTOP) process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def exit_reason(code: int) -> str:
    """Why a driver that ended with ``code`` (a Popen returncode) did not report an outcome."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer?)" if -code == signal.SIGKILL else ""
        return f"driver killed by {name}{hint}"
    if code > 128:  # how a shell, and the driver's own SIGTERM handler, report a signal
        with contextlib.suppress(ValueError):
            name = signal.Signals(code - 128).name
            return f"driver ended by {name} (exit code {code}) without reporting an outcome"
    return f"driver exited with code {code} without reporting an outcome"


# the loop -------------------------------------------------------------------------------------


class Launcher:
    name = ""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.owner = api_process_id()  # this API process, in leases
        self.host = socket.gethostname()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed_at = float("-inf")

    def start(self) -> None:
        """Recover what a previous API left running, then reconcile in the background."""
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-launcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Reconcile now (after a submit, a cancel, a driver's exit) rather than at the next poll."""
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
            self._renew_leases()
            self._reap()
            for job in self.store.with_status(("running",), launcher=self.name):
                self._settle_running(job)
            self.store.cancel_queued(launcher=self.name)
            room = self._room()
            if room > 0:
                for job in self.store.with_status(("queued",), launcher=self.name, limit=room):
                    self._launch(job, job.attempt + 1)

    # leases and lost drivers ------------------------------------------------------------------

    def _renew_leases(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._renewed_at >= self.settings.lease_ttl / 3:
            self.store.renew_leases(self.owner, self.settings.lease_ttl)
            self._renewed_at = now

    def _may_take(self, job: JobRow) -> tuple[bool, str | None]:
        """Whether this process may settle or relaunch ``job`` now, and the dead owner (if any)
        whose unexpired lease it takes over."""
        owner = job.lease_owner
        if owner is None or owner == self.owner:
            return True, None
        if job.lease_expires_at is None or job.lease_expires_at <= utcnow():
            return True, None
        if owner_dead_here(owner, self.host):
            return True, owner
        return False, None

    def _claim(self, job: JobRow, steal_from: str | None = None, **fields: Any) -> bool:
        """Move ``job`` from the state and attempt it was read in (one compare-and-set)."""
        return self.store.claim(
            job.id,
            self.owner,
            self.settings.lease_ttl,
            when_status=job.status,
            when_attempt=job.attempt,
            steal_from=steal_from,
            **fields,
        )

    def _settle(
        self, job: JobRow, status: str, error: str | None = None, steal_from: str | None = None
    ) -> bool:
        return self._claim(
            job,
            steal_from,
            status=status,
            error=error,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )

    def _lose(self, job: JobRow, reason: str, *, charged: bool = True, steal_from: str | None = None) -> bool:
        """The driver of the running ``job`` is gone without reporting an outcome: resume the job
        as the next attempt, or fail it once ``max_attempts`` drivers were lost (a cancel asked
        for meanwhile makes it cancelled). ``charged``: whether this loss counts."""
        if job.cancel_requested:
            return self._settle(job, "cancelled", steal_from=steal_from)
        record = {"attempt": job.attempt, "reason": reason, "charged": charged}
        record["at"] = utcnow().isoformat(timespec="seconds")
        records = [*(job.attempts or []), record]
        last_retry = max((i for i, r in enumerate(records) if r.get("retry")), default=-1)
        lost = [r for r in records[last_retry + 1 :] if not r.get("retry")]
        counted = sum(1 for r in lost if r.get("charged", True))
        limit = self.settings.max_attempts
        if counted >= limit:
            reasons = "; ".join(f"attempt {r['attempt']}: {r['reason']}" for r in lost)
            times = "once" if counted == 1 else f"{counted} times"
            error = f"Lost its driver {times} (LODOTUNE_MAX_ATTEMPTS={limit}): {reasons}"
            won = self._claim(
                job,
                steal_from,
                status="failed",
                error=error,
                finished_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
                attempts=records,
            )
            then = "giving up"
        else:
            won = self._claim(
                job,
                steal_from,
                status="queued",
                driver=None,
                heartbeat_at=None,
                lease_owner=None,
                lease_expires_at=None,
                attempts=records,
            )
            then = f"resuming as attempt {job.attempt + 1}"
        if won:
            print(f"lodotune: job {job.id} attempt {job.attempt}: {reason}; {then}", file=sys.stderr)
        return won

    def _stale(self, job: JobRow, *, before_first: bool = True) -> str | None:
        """Why the driver of ``job`` counts as hung (its heartbeat too old), or None."""
        timeout = self.settings.heartbeat_timeout
        now = utcnow()
        if job.heartbeat_at is not None:
            age = (now - job.heartbeat_at).total_seconds()
            if age > timeout:
                return f"driver sent no heartbeat for {age:.0f} s (LODOTUNE_HEARTBEAT_TIMEOUT={timeout:g})"
            return None
        since = job.started_at or job.updated_at
        limit = max(timeout, DRIVER_START_GRACE_SECONDS)
        if before_first and since is not None and (now - since).total_seconds() > limit:
            return f"driver sent no first heartbeat within {limit:g} s of its start"
        return None

    # what each launcher supplies ----------------------------------------------------------------

    def _room(self) -> int:
        """How many queued jobs to start now."""
        raise NotImplementedError

    def _launch(self, job: JobRow, attempt: int) -> None:
        raise NotImplementedError

    def _reap(self) -> None:
        """Collect the drivers of this process that ended (no-op where there are none)."""

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


# the service's own Ray ------------------------------------------------------------------------

RAY_START_TIMEOUT_SECONDS = 120.0
RAY_STOP_GRACE_SECONDS = 5.0
_RAY_PORT_OPTIONS = (  # every port free-picked: other Rays (and Redis on 6379) may run here
    "port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] == 6379:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _pids_mentioning(text: str) -> list[int]:
    """Live processes (not this one) whose command line contains ``text``."""
    if not sys.platform.startswith("linux"):
        return []
    found, needle = [], text.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() and _process_start(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _kill_session(session: int) -> None:
    """SIGKILL every process of ``session``, a session this process started for its Ray alone;
    only while its leader is gone (so the id is no one else's)."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or (proc / str(session)).exists():
        return
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session:
                    os.kill(int(entry.name), signal.SIGKILL)


def _kill_ray_of(temp_dir: str, session: int | None) -> None:
    """Stop a ``ray start`` head by its processes only (``ray stop`` would stop every Ray of this
    user here): SIGTERM what names ``temp_dir``, SIGKILL what is left, then its session's workers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_mentioning(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (RAY_STOP_GRACE_SECONDS if sig == signal.SIGTERM else 2.0)
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _process_start(pid) is not None]
            time.sleep(0.05)
    if session is not None:
        _kill_session(session)  # workers (``ray::…``) and its client server name no temp dir
    shutil.rmtree(temp_dir, ignore_errors=True)


class ServiceRay:
    """One local Ray for the whole life of an API process (``LODOTUNE_SHARED_RAY``): started by
    ``ray start --head`` on free ports (never Redis's 6379), all CPUs, no dashboard, its files in a
    short temp dir under /tmp (Ray's socket paths have 107 bytes), token auth on with a fresh
    token that only this API process and its drivers get. Drivers join it
    (``LODOTUNE_RAY_ADDRESS``) in well under a second instead of starting a Ray of their own.

    ``record``: a file naming the temp dir and the API process while it runs, so the next start
    of an API process on the same artifact directory stops a Ray whose API process was killed."""

    def __init__(self, record: Path | None = None) -> None:
        self.record = record
        self.address: str | None = None
        self.temp_dir: str | None = None
        self._token: str | None = None
        self._session: int | None = None
        self._pids: dict[int, str] = {}  # its GCS and raylet: pid -> start time

    def driver_environment(self) -> dict[str, str]:
        assert self.address is not None and self._token is not None
        return {"LODOTUNE_RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self._token}

    def start(self, owner: str) -> None:
        ray_bin = Path(sys.executable).with_name("ray")
        command_path = str(ray_bin) if ray_bin.exists() else shutil.which("ray")
        if command_path is None:
            raise RuntimeError("no `ray` command next to this Python or on PATH (pip install 'ray[default]')")
        temp_dir = tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        token = secrets.token_hex(32)
        ports = dict(zip(_RAY_PORT_OPTIONS, _free_ports(len(_RAY_PORT_OPTIONS)), strict=True))
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        env.pop("RAY_ADDRESS", None)
        command = [
            command_path,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={os.cpu_count() or 1}",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *(f"--{name}={port}" for name, port in ports.items()),
        ]
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.parent.mkdir(parents=True, exist_ok=True)
                self.record.write_text(json.dumps({"owner": owner, "temp_dir": temp_dir}))
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,  # its processes share a session of their own: _kill_ray_of
        )
        try:
            output, _ = process.communicate(timeout=RAY_START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            output, _ = process.communicate()
        if process.returncode != 0:
            _kill_ray_of(temp_dir, process.pid)
            self._forget()
            last = (output or "").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"`ray start --head` exited with {process.returncode}: {last[0][:300]}")
        self.address, self.temp_dir = f"127.0.0.1:{ports['port']}", temp_dir
        self._token, self._session = token, process.pid
        if self.record is not None:
            with contextlib.suppress(OSError):
                record = {"owner": owner, "temp_dir": temp_dir, "session": process.pid}
                self.record.write_text(json.dumps(record))
        for pid in _pids_mentioning(temp_dir):
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
                start = _process_start(pid)
                if start is not None and (name.endswith(b"raylet") or name.endswith(b"gcs_server")):
                    self._pids[pid] = start
        print(f"lodotune: the service's Ray runs at {self.address} ({temp_dir})", file=sys.stderr)

    def alive(self) -> bool:
        """Whether its GCS and raylet still run."""
        if self.address is None:
            return False
        return all(_process_start(pid) == start for pid, start in self._pids.items())

    def stop(self) -> None:
        if self.temp_dir is not None:
            _kill_ray_of(self.temp_dir, self._session)
        self._forget()
        self.address = self.temp_dir = self._token = self._session = None
        self._pids = {}

    def _forget(self) -> None:
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.unlink()

    @staticmethod
    def stop_orphans(folder: Path, host: str) -> None:
        """Stop the Rays of API processes on this host that died without stopping theirs."""
        with contextlib.suppress(OSError):
            for record in folder.glob("*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    data = json.loads(record.read_text())
                    if owner_dead_here(data["owner"], host):
                        temp_dir = str(data["temp_dir"])
                        if temp_dir.startswith(tempfile.gettempdir()) or temp_dir.startswith("/tmp/"):
                            print(f"lodotune: stopping the Ray of dead {data['owner']}", file=sys.stderr)
                            _kill_ray_of(temp_dir, data.get("session"))
                        record.unlink()


@dataclass
class _Driver:
    """A driver this API process started: for ``attempt`` of its job."""

    attempt: int
    process: subprocess.Popen
    stopping_since: float | None = None  # monotonic time of the SIGTERM (cancel) or of its job's end
    lost_reason: str | None = None  # why the watchdog killed it


@dataclass
class _Standby:
    """A driver started before its job (``python -m api.driver --standby``), with the environment
    it was started in: a job whose environment differs (the service's Ray was replaced) cannot use it."""

    process: subprocess.Popen
    env: dict[str, str]


class InProcessLauncher(Launcher):
    name = "inprocess"

    def __init__(self, store: JobStore, settings: Settings) -> None:
        super().__init__(store, settings)
        self._drivers: dict[str, _Driver] = {}
        self._watchdog: threading.Thread | None = None
        shared = settings.shared_ray and settings.executor == "ray" and not settings.ray_address
        self._ray_records = settings.artifact_dir.resolve() / "service-ray"
        name = self.owner.replace(":", "-").replace("/", "-")
        self._ray = ServiceRay(self._ray_records / f"{name}.json") if shared else None
        self._standby: _Standby | None = None
        self._standby_died_at = float("-inf")  # monotonic: when one last exited unused

    def start(self) -> None:
        if self._ray is not None:
            ServiceRay.stop_orphans(self._ray_records, self.host)
            try:
                self._ensure_ray()
            except Exception as err:  # the first launch tries again, and fails its job with why
                print(f"lodotune: {err}", file=sys.stderr)
        super().start()
        self._watchdog = threading.Thread(
            target=self._watch_heartbeats, name="lodotune-watchdog", daemon=True
        )
        self._watchdog.start()

    def _room(self) -> int:
        return self.settings.max_concurrent_jobs - len(self._drivers)

    def _ensure_ray(self) -> None:
        """The service's Ray, started now if it is not running (never started, or died: its drivers
        then lose their trials' Ray and their jobs resume, as the next attempt, on the new one)."""
        assert self._ray is not None
        if self._ray.alive():
            return
        if self._ray.address is not None:
            print(
                f"lodotune: the service's Ray at {self._ray.address} died; starting a new one",
                file=sys.stderr,
            )
            self._ray.stop()
        try:
            self._ray.start(self.owner)
        except Exception as err:
            raise RuntimeError(f"The service's Ray could not start: {err}") from err

    def reconcile(self) -> None:
        self.kill_hung()
        super().reconcile()
        with self._lock:
            self._keep_standby()

    # the standby driver ---------------------------------------------------------------------------

    def _driver_env(self) -> dict[str, str]:
        return {**os.environ, **driver_environment(self.settings, self._ray)}

    def _spawn_driver(self, command: list[str], env: dict[str, str], **streams: Any) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *command],
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            start_new_session=True,  # its Ray's processes share the session: kill_ray_leftovers
            **streams,
        )

    def _keep_standby(self) -> None:
        """Keep one driver started ahead (``standby_driver``) while no driver runs, or while a job
        waits for room, so that job's first trial waits for none of a driver's start: its imports,
        and with the service's Ray its workers' (seconds each on a small machine). Not while jobs
        run and none waits (its start would take their CPUs for nothing); not again within a
        minute of one that exited unused (it would only fail again)."""
        if not self.settings.standby_driver or self._stop.is_set():
            return
        idle = not self._drivers and self._room() > 0
        if not idle and not (self._room() <= 0 and self._job_waiting()):
            return
        if self._standby is not None:
            if self._standby.process.poll() is None:
                return
            code = self._standby.process.returncode
            print(f"lodotune: the standby driver exited with {code}", file=sys.stderr)
            self._standby, self._standby_died_at = None, time.monotonic()
        if time.monotonic() - self._standby_died_at < STANDBY_RETRY_SECONDS:
            return
        if self._ray is not None:
            try:
                self._ensure_ray()
            except Exception:
                return  # the next launch fails its job with the reason
        env = self._driver_env()
        try:
            process = self._spawn_driver(STANDBY_COMMAND, env, stdin=subprocess.PIPE)
        except OSError as err:
            print(f"lodotune: cannot start a standby driver: {err}", file=sys.stderr)
            self._standby_died_at = time.monotonic()
            return
        self._standby = _Standby(process, env)

    def _job_waiting(self) -> bool:
        return bool(self.store.with_status(("queued",), launcher=self.name, limit=1))

    def _take_standby(
        self, env: dict[str, str], job_id: str, attempt: int, log: Path
    ) -> subprocess.Popen | None:
        """The standby driver, given ``job_id``'s ``attempt``; None when there is none alive that
        was started in ``env`` (a stale one is stopped)."""
        standby, self._standby = self._standby, None
        if standby is None:
            return None
        if standby.process.poll() is None and standby.env == env:
            order = {"job_id": job_id, "attempt": attempt, "log": str(log)}
            try:
                assert standby.process.stdin is not None
                standby.process.stdin.write(json.dumps(order).encode() + b"\n")
                standby.process.stdin.close()
                return standby.process
            except OSError:  # it exited meanwhile
                pass
        self._stop_standby(standby)
        return None

    @staticmethod
    def _stop_standby(standby: _Standby) -> None:
        _kill_group(standby.process.pid)
        threading.Thread(target=standby.process.wait, name="lodotune-standby-wait", daemon=True).start()

    # hung drivers -------------------------------------------------------------------------------

    def _watch_heartbeats(self) -> None:
        """A thread apart from the reconcile loop, which may wait on the store's write lock (that a
        stopped driver can hold): it only reads, and kills what hangs."""
        period = min(1.0, self.settings.heartbeat_timeout / 6)
        while not self._stop.wait(period):
            try:
                self.kill_hung()
            except Exception as err:  # the next round retries
                print(f"lodotune: heartbeat watch failed: {type(err).__name__}: {err}", file=sys.stderr)

    def _hung(self, job: JobRow, attempt: int) -> str | None:
        """Why the local driver of ``attempt`` counts as hung: its heartbeat in the store is too
        old and so is its liveness file (when it has one), else None."""
        reason = self._stale(job)
        if reason is None:
            return None
        with contextlib.suppress(OSError):
            age = time.time() - alive_path(job.run_dir, attempt).stat().st_mtime
            if age <= self.settings.heartbeat_timeout:
                return None  # it beats, but its writes wait on the store's lock
        return reason

    def kill_hung(self) -> None:
        """SIGKILL the process group of each driver of this process whose heartbeat is too old
        (reads only; the reconcile loop settles the exit with the reason)."""
        drivers = dict(self._drivers)
        if not drivers:
            return
        for job in self.store.with_status(("running",), launcher=self.name):
            entry = drivers.get(job.id)
            if entry is None or entry.attempt != job.attempt or entry.lost_reason is not None:
                continue
            if entry.process.returncode is not None:
                continue
            reason = self._hung(job, entry.attempt)
            if reason is not None:
                entry.lost_reason = f"{reason}: hung or stopped, killed"
                print(f"lodotune: job {job.id} attempt {entry.attempt}: {entry.lost_reason}", file=sys.stderr)
                _kill_group(entry.process.pid)

    @staticmethod
    def _log_path(job: JobRow, attempt: int | None = None) -> Path:
        return Path(job.run_dir) / f"driver-{job.attempt if attempt is None else attempt}.log"

    def _launch(self, job: JobRow, attempt: int) -> None:
        claimed = self._claim(
            job,
            status="running",
            attempt=attempt,
            driver=None,
            started_at=utcnow(),
            heartbeat_at=None,
            error=None,
            phase="starting",  # shown from the first second; the driver says it again once up
        )
        if not claimed:
            return  # another API process took it first
        job = self.store.get(job.id)
        if self._ray is not None:
            try:
                self._ensure_ray()
            except Exception as err:
                print(f"lodotune: job {job.id}: {err}", file=sys.stderr)
                self._settle(job, "failed", " ".join(str(err).split()))
                return
        log_path = self._log_path(job)
        env = self._driver_env()
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            process = self._take_standby(env, job.id, attempt, log_path)
            if process is None:
                with log_path.open("ab") as log:
                    process = self._spawn_driver(
                        driver_command(job.id, attempt),
                        env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
        except OSError as err:
            print(f"lodotune: job {job.id}: cannot start its driver: {err}", file=sys.stderr)
            self._lose(job, f"driver could not start: {type(err).__name__}")
            return
        self._drivers[job.id] = _Driver(attempt, process)
        threading.Thread(
            target=self._watch, args=(process,), name="lodotune-driver-wait", daemon=True
        ).start()
        self.store.update(job.id, driver=f"pid {process.pid} start {_process_start(process.pid)}")

    def _watch(self, process: subprocess.Popen) -> None:
        """Wait on one driver (so it is reaped the moment it exits) and reconcile right then."""
        process.wait()
        self.wake()

    def _reap(self) -> None:
        for job_id, entry in list(self._drivers.items()):
            process = entry.process
            current = self.store.get(job_id)
            ours = current is not None and current.status == "running" and current.attempt == entry.attempt
            code = process.poll()
            if code is None:
                if ours:
                    continue  # _settle_running watches it
                if current is None or current.attempt != entry.attempt or current.status == "queued":
                    # another API process resumed the job: this driver must not run on
                    print(
                        f"lodotune: job {job_id} attempt {entry.attempt} superseded; killing its driver",
                        file=sys.stderr,
                    )
                    self._kill(entry)
                    code = process.returncode
                elif entry.stopping_since is None:
                    entry.stopping_since = time.monotonic()  # it reported the outcome; it is exiting
                    continue
                elif time.monotonic() - entry.stopping_since > TERMINATE_GRACE_SECONDS:
                    self._kill(entry)  # it reported the outcome but does not exit
                    code = process.returncode
                else:
                    continue
            del self._drivers[job_id]
            kill_ray_leftovers(process.pid)
            if not ours:
                continue  # the driver reported its outcome (or the job moved on without it)
            if current.cancel_requested:
                self._settle(current, "cancelled")
            else:
                self._lose(current, entry.lost_reason or exit_reason(code))

    def _kill(self, entry: _Driver) -> None:
        _kill_group(entry.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            entry.process.wait(TERMINATE_GRACE_SECONDS)

    def _settle_running(self, job: JobRow) -> None:
        entry = self._drivers.get(job.id)
        if entry is not None:
            if entry.attempt != job.attempt or entry.process.poll() is not None:
                return  # _reap deals with it on the next pass (a driver's exit wakes the loop)
            if job.cancel_requested:
                if entry.stopping_since is None:
                    entry.stopping_since = time.monotonic()
                    entry.process.terminate()  # the driver stops between trials and unwinds its Ray
                elif time.monotonic() - entry.stopping_since > TERMINATE_GRACE_SECONDS:
                    self._kill(entry)
            return  # a hung one is killed by kill_hung, its exit settled by _reap
        may, steal_from = self._may_take(job)
        if may:
            self._settle_elsewhere(job, steal_from)

    def _settle_elsewhere(self, job: JobRow, steal_from: str | None) -> None:
        """A running job this process did not start, whose lease it may take: another API
        process's (stopped, or not renewing) or an earlier one's."""
        owner = job.lease_owner
        if owner is not None and _owner_host(owner) != self.host:
            reason = self._stale(job)  # a driver on another host: only its heartbeat tells
            if reason is not None:
                self._lose(job, f"{reason}: presumed lost")
            return
        pid = _driver_pid(job.driver)
        owner_gone = owner is None or steal_from is not None or owner_dead_here(owner, self.host)
        if pid is not None and _is_driver_of(pid, job):
            reason = self._hung(job, job.attempt)
            if reason is None:
                return  # alive and beating: leave it
            _kill_group(pid)
            deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
            while _is_driver_of(pid, job) and time.monotonic() < deadline:
                time.sleep(0.05)
            kill_ray_leftovers(pid)
            self._lose(job, f"{reason}: hung or stopped, killed", steal_from=steal_from)
            return
        if pid is not None:
            kill_ray_leftovers(pid)
        if owner_gone:  # its driver died with the API process that ran it
            self._lose(job, SERVER_STOPPED, charged=False, steal_from=steal_from)
        else:
            self._lose(job, "driver gone", steal_from=steal_from)

    def close(self) -> None:
        """Stop the loop and this process's drivers; their jobs go back to the queue (uncounted),
        so another API process on the store, or the next start, resumes them."""
        super().close()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        with self._lock:
            drivers = list(self._drivers.items())
            for _, entry in drivers:
                with contextlib.suppress(ProcessLookupError):
                    entry.process.terminate()
            deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
            for _, entry in drivers:
                try:
                    entry.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._kill(entry)
            for job_id, entry in drivers:
                kill_ray_leftovers(entry.process.pid)
                current = self.store.get(job_id)
                if current is not None and current.status == "running" and current.attempt == entry.attempt:
                    self._lose(current, SERVER_STOPPED, charged=False)
            self._drivers.clear()
            if self._standby is not None:
                self._stop_standby(self._standby)
                self._standby = None
            if self._ray is not None:
                self._ray.stop()  # after its drivers: they disconnect first


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

    def _room(self) -> int:
        return SUBMIT_BATCH  # the cluster queues jobs by the resources they reserve

    def _launch(self, job: JobRow, attempt: int) -> None:
        submission = self.submission_id(job.id, attempt)
        claimed = self._claim(
            job,
            status="running",
            attempt=attempt,
            driver=submission,
            started_at=utcnow(),
            heartbeat_at=None,
            error=None,
        )
        if not claimed:
            return  # another API process took it first
        try:
            self.client.submit_job(
                entrypoint=" ".join(["python", *driver_command(job.id, attempt)]),
                submission_id=submission,
                runtime_env={"env_vars": driver_environment(self.settings)},
                metadata={"lodotune_job": job.id, "attempt": str(attempt)},
                entrypoint_num_cpus=self.settings.driver_num_cpus,
            )
        except Exception as err:
            message = " ".join(str(err).split())
            if "already exists" in message:  # a resubmit of the same attempt is fine
                return
            if any(code in message for code in ("401", "403")):
                self.store.finish(job.id, "failed", error=f"Ray refused the submission: {message}")
                return
            # the cluster is starting or unreachable: back to the queue, retried on the next pass
            print(f"lodotune: job {job.id}: Ray Jobs submission failed: {message}", file=sys.stderr)
            self.store.claim(
                job.id,
                self.owner,
                self.settings.lease_ttl,
                when_status="running",
                when_attempt=attempt,
                status="queued",
                attempt=attempt - 1,
                driver=None,
                lease_owner=None,
                lease_expires_at=None,
                error=f"Ray Jobs submission failed, retrying: {message}",
            )

    def _settle_running(self, job: JobRow) -> None:
        may, steal_from = self._may_take(job)
        if not may:
            return  # another live API process holds its lease and watches it
        submission = job.driver or self.submission_id(job.id, job.attempt)
        try:
            status = str(self.client.get_job_status(submission)).rsplit(".", 1)[-1]
        except Exception as err:
            if "does not exist" in str(err) or "404" in str(err):
                self._lose(
                    job, "Ray has no such job (the cluster restarted?)", charged=False, steal_from=steal_from
                )
                return
            raise
        if status in ("PENDING", "RUNNING"):
            if job.cancel_requested:
                self.client.stop_job(submission)  # a PENDING stop may do nothing: the driver checks too
                return
            reason = self._stale(job, before_first=False) if status == "RUNNING" else None
            if reason is not None:
                with contextlib.suppress(Exception):
                    self.client.stop_job(submission)
                self._lose(job, f"{reason}: hung or stopped, stopped", steal_from=steal_from)
            return
        current = self.store.get(job.id)
        if current is None or current.status != "running" or current.attempt != job.attempt:
            return  # the driver reported its outcome
        if current.cancel_requested:
            self._settle(current, "cancelled", steal_from=steal_from)
            return
        if status == "STOPPED":
            self._settle(current, "failed", "stopped outside lodotune (ray job stop)", steal_from=steal_from)
            return
        logs = ""
        with contextlib.suppress(Exception):
            logs = self.client.get_job_logs(submission)
        if logs:
            print(
                f"lodotune: Ray job {submission} ended {status}; its log ends:\n{_tail(logs)}",
                file=sys.stderr,
            )
        self._lose(
            current,
            f"Ray job {submission} ended {status} without reporting an outcome",
            steal_from=steal_from,
        )


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

    def _room(self) -> int:
        return 0

    def _settle_running(self, job: JobRow) -> None:
        pass


LAUNCHERS = {"inprocess": InProcessLauncher, "ray-jobs": RayJobsLauncher, "queue": QueueOnlyLauncher}


def make_launcher(store: JobStore, settings: Settings) -> Launcher:
    return LAUNCHERS[settings.launcher](store, settings)
