"""Executors: run a batch of ``TrialSpec``s and return their ``TrialResult``s in input order.

Every executor has the same contract (``Executor``): ``map(specs, progress)`` returns one result
per spec, in the order of ``specs``; ``progress(index, result)`` is called once per trial as it
finishes (completion order, ``index`` is the spec's position); a trial whose ``run_trial`` raises
becomes a result with status ``"error"`` (``error`` set, ``diverged`` False: an exception is not the
hyperparameters' fault) and no losses or metrics, never a crash of the whole batch; ``close()``
releases what the executor started (also on leaving a ``with``).

``LocalExecutor`` runs the trials in this process, one after another. ``RayExecutor`` runs one
``ray.remote`` task per shard of ``trials_per_task`` consecutive trials (1 by default: one task
per trial) and collects them with ``ray.wait``. The executor is shard-shaped so that a shard can
later run vectorized on one device without changing callers.

Results are identical across executors for the same specs, except where a task's kernels split
their reductions by thread count: Ray workers run with ``int(num_cpus_per_trial)`` torch threads
(≥ 1), a local run with the process's setting.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from ._validation import invalid
from .population import Vectorize, check_members_per_task, check_vectorize, plan, run_population
from .trial import TrialResult, TrialSpec, run_trial

Progress = Callable[[int, TrialResult], None]
TrialFn = Callable[[TrialSpec], TrialResult]

# Ray's plasma socket is <temp_dir>/session_<date>_<time>_<µs>_<pid>/sockets/plasma_store, at most
# 107 bytes on Linux; the part after <temp_dir> is up to 65 bytes (7-digit pid), so temp dirs
# longer than this are reached through a short symlink.
_MAX_RAY_TEMP_DIR = 40

_AUTH_HINT = (
    "if the cluster has token authentication on (the default since Ray 2.59), set RAY_AUTH_MODE=token "
    "and give its token by RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token "
    "(`ray get-auth-token` on the head prints it)"
)
_TOKEN_HINT = "check that the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) is the cluster's"


@runtime_checkable
class Executor(Protocol):
    """Runs trials. Implementations: ``LocalExecutor``, ``RayExecutor``."""

    def map(self, specs: Sequence[TrialSpec], progress: Progress | None = None) -> list[TrialResult]:
        """One result per spec, in input order; ``progress(index, result)`` once per finished trial."""
        ...

    def close(self) -> None:
        """Release what the executor started; idempotent."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc_info: object) -> None: ...


def failed_result(spec: TrialSpec, error: str, wall_time: float = 0.0) -> TrialResult:
    """The result of a trial that raised (or whose worker could not finish it): status ``"error"``."""
    return TrialResult(
        spec=spec,
        losses=[],
        diverged=False,
        wall_time=wall_time,
        steps_per_second=0.0,
        metrics={},
        error=error,
    )


def _run_one(spec: TrialSpec, trial_fn: TrialFn, reason: str | None) -> TrialResult:
    start = time.perf_counter()
    try:
        result = trial_fn(spec)
    except Exception as exc:
        result = failed_result(spec, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    if result.execution is None:
        result.execution = {"vectorized": False, "members": 1, "reason": reason}
    return result


def _run_vectorized(specs: list[TrialSpec]) -> list[TrialResult]:
    start = time.perf_counter()
    try:
        return run_population(specs)
    except Exception as exc:
        # one program for all members: its exception is every member's error
        error, wall = f"{type(exc).__name__}: {exc}", time.perf_counter() - start
        results = [failed_result(spec, error, wall) for spec in specs]
        for result in results:
            result.execution = {"vectorized": True, "members": len(specs)}
        return results


def run_shard(
    specs: Sequence[TrialSpec],
    trial_fn: TrialFn = run_trial,
    *,
    vectorize: Vectorize = "off",
    members_per_task: int | None = None,
    progress: Progress | None = None,
) -> list[TrialResult]:
    """Run ``specs``: each group that shares a program as vectorized populations
    (:func:`tuner.population.plan`: ``vectorize``, ``members_per_task``, the memory budget), the
    others one after another; an exception becomes its trials' error results. A custom
    ``trial_fn`` always runs per trial. ``progress(index, result)`` as each result is ready."""
    if trial_fn is not run_trial:
        vectorize = "off"
    results: list[TrialResult | None] = [None] * len(specs)
    for shard in plan(specs, vectorize, members_per_task=members_per_task):
        if shard.vectorized:
            out = _run_vectorized([specs[i] for i in shard.indices])
        else:
            out = [_run_one(specs[i], trial_fn, shard.reason) for i in shard.indices]
        for index, result in zip(shard.indices, out, strict=True):
            results[index] = result
            if progress is not None:
                progress(index, result)
    return results  # type: ignore[return-value]


class _Closing:
    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalExecutor(_Closing):
    """Runs every trial in this process: per trial in input order, or (``vectorize``) each group
    of trials that shares task, optimizer and length as vectorized populations.

    ``trial_fn`` replaces ``run_trial`` (a fake fitness for strategy tests, say).
    """

    def __init__(
        self,
        *,
        trial_fn: TrialFn = run_trial,
        vectorize: Vectorize = "off",
        members_per_task: int | None = None,
    ) -> None:
        self._trial_fn = trial_fn
        self.vectorize = check_vectorize(vectorize)
        self.members_per_task = check_members_per_task(members_per_task)

    def map(self, specs: Sequence[TrialSpec], progress: Progress | None = None) -> list[TrialResult]:
        return run_shard(
            list(specs),
            self._trial_fn,
            vectorize=self.vectorize,
            members_per_task=self.members_per_task,
            progress=progress,
        )

    def __repr__(self) -> str:
        return f"LocalExecutor(vectorize={self.vectorize!r})"


def _ray_worker_shard(
    specs: list[TrialSpec], num_threads: int, trial_fn: TrialFn, vectorize: Vectorize = "off"
) -> list[TrialResult]:
    """The body of a Ray task: cap torch's threads to the CPUs reserved, then run the shard (a
    vectorized one is split further here if it does not fit this worker's memory)."""
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return run_shard(specs, trial_fn, vectorize=vectorize)


def _warm_worker() -> int:
    """A task that does nothing: by the time it runs, its worker has imported this module (torch,
    the tasks, the optimizers), which is most of a first trial's wait."""
    return os.getpid()


def warm_ray_workers(count: int) -> int:
    """Start up to ``count`` workers of this driver's Ray job before its first trial (a worker
    imports Python, Ray and torch first: seconds on a small machine); the trials reuse them.
    Returns how many distinct workers ran."""
    import ray

    task = ray.remote(_warm_worker).options(num_cpus=1)
    return len(set(ray.get([task.remote() for _ in range(count)])))


def _check_resource(name: str, value: object) -> float:
    # Ray accepts fractions up to 1 and whole numbers above.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value > 1 and value != int(value)):
        raise invalid(name, value, "a number >= 0: a fraction up to 1 or a whole number")
    return float(value)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(name, value, f"an integer >= {low}")
    return value


def _socket_safe_temp_dir(temp_dir: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``temp_dir`` made absolute and created; if too long for Ray's socket paths, a short symlink to it.

    Returns the path to hand to Ray and the directory holding the symlink (to remove on close), or
    ``None`` when no symlink was needed. Ray keeps the link as given, so its sockets get short paths
    while its logs land in ``temp_dir``.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(temp_dir)))
    os.makedirs(path, exist_ok=True)
    if len(path.encode()) <= _MAX_RAY_TEMP_DIR:
        return path, None
    holder = tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    link = os.path.join(holder, "t")
    os.symlink(path, link)
    return link, holder


class RayExecutor(_Closing):
    """Runs trials as Ray tasks: one task per shard of ``trials_per_task`` consecutive trials.

    Each task reserves ``num_cpus_per_trial`` CPUs and ``num_gpus_per_trial`` GPUs (a shard runs its
    trials one after another, so it needs one trial's worth) — fractions put several trials on one
    GPU — and caps torch to ``int(num_cpus_per_trial)`` threads (≥ 1) so concurrent trials do not
    oversubscribe the cores. GPU tasks keep Ray's default of one task per worker process, which
    frees GPU memory after every task at the price of a process start.

    Fault tolerance: a worker that dies (killed, OOM, segfault) is a system failure; Ray re-runs
    its task up to ``max_retries`` times, and since trials are deterministic the retried result is
    the one an undisturbed run gives. Exceptions raised by a trial are not retried
    (``retry_exceptions=False``): they become error results. A task that still cannot finish after
    its retries gives error results for its trials.

    Which Ray:

    * Ray already initialised in this process (a test fixture, a driver running as a Ray Job): it
      is used as it is (``address``, ``num_cpus`` and ``temp_dir`` are then ignored) and left
      running on ``close()``.
    * ``address=None``: starts a local Ray with ``num_cpus`` CPUs (default ``os.cpu_count()``), the
      dashboard off, usage stats off, and its temp dir in ``temp_dir`` (default Ray's own,
      ``/tmp/ray``); shut down on ``close()``. A ``temp_dir`` too long for Unix socket paths is
      reached through a short symlink in ``/tmp``.
    * ``address="host:port"`` (the GCS port given to ``ray start --head --port``; or ``"auto"``):
      joins that cluster; ``num_cpus`` and ``temp_dir`` are ignored (the cluster has its own) and
      ``close()`` disconnects.

    Token authentication (Ray ≥ 2.52; on by default for clusters started by Ray ≥ 2.59): a new
    local Ray enables it by itself and creates ``~/.ray/auth_token`` if missing. To join a cluster
    with an explicit ``address`` whose auth is on, Ray does *not* switch token mode on for you: set
    ``RAY_AUTH_MODE=token`` and give the cluster's token by ``RAY_AUTH_TOKEN``, a file named by
    ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` (``ray get-auth-token`` on the head prints
    it); a refused connection raises ``ConnectionError`` saying so. Nothing here switches
    authentication off.

    ``trial_fn`` replaces ``run_trial``; it must be picklable for the workers (module-level
    functions by reference, closures by value).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus_per_trial: float = 1,
        num_gpus_per_trial: float = 0,
        max_retries: int = 3,
        temp_dir: str | os.PathLike[str] | None = None,
        num_cpus: int | None = None,
        trials_per_task: int = 1,
        trial_fn: TrialFn = run_trial,
        vectorize: Vectorize = "off",
        members_per_task: int | None = None,
    ) -> None:
        self.vectorize = check_vectorize(vectorize)
        self.members_per_task = check_members_per_task(members_per_task)
        self.num_cpus_per_trial = _check_resource("num_cpus_per_trial", num_cpus_per_trial)
        self.num_gpus_per_trial = _check_resource("num_gpus_per_trial", num_gpus_per_trial)
        self.max_retries = _check_int("max_retries", max_retries, 0)
        self.trials_per_task = _check_int("trials_per_task", trials_per_task, 1)
        if num_cpus is not None:
            _check_int("num_cpus", num_cpus, 1)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise invalid("address", address, "None (start a local Ray), 'auto' or 'host:port'")
        if not callable(trial_fn):
            raise invalid("trial_fn", trial_fn, "a callable TrialSpec -> TrialResult")
        try:
            import ray
        except ImportError as err:
            raise ImportError("RayExecutor needs ray: pip install 'ray[default]'") from err

        self._ray = ray
        self._trial_fn = trial_fn
        self._owns_ray = False
        self._link_holder: str | None = None
        self._closed = False
        if not ray.is_initialized():
            self._connect(address, num_cpus, temp_dir)
        self._task = ray.remote(_ray_worker_shard).options(
            num_cpus=self.num_cpus_per_trial,
            num_gpus=self.num_gpus_per_trial,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )

    def _connect(self, address: str | None, num_cpus: int | None, temp_dir: Any) -> None:
        ray = self._ray
        if address is not None:
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except ConnectionError as err:
                token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
                raise ConnectionError(f"{err}; {_TOKEN_HINT if token_mode else _AUTH_HINT}") from err
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray_temp = None
            if temp_dir is not None:
                ray_temp, self._link_holder = _socket_safe_temp_dir(temp_dir)
            try:
                ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    _temp_dir=ray_temp,
                    logging_level=logging.WARNING,
                )
            except BaseException:
                self._remove_link()
                raise
        self._owns_ray = True

    def map(self, specs: Sequence[TrialSpec], progress: Progress | None = None) -> list[TrialResult]:
        if self._closed:
            raise RuntimeError("RayExecutor.map after close()")
        specs = list(specs)
        if not specs:
            return []
        ray = self._ray
        num_threads = max(1, int(self.num_cpus_per_trial))
        # a custom trial function is shipped once, not with every task
        trial_fn = run_trial if self._trial_fn is run_trial else ray.put(self._trial_fn)
        pending = {}
        for indices, vectorize in self._shards(specs):
            shard = [specs[i] for i in indices]
            pending[self._task.remote(shard, num_threads, trial_fn, vectorize)] = (indices, shard)
        results: list[TrialResult | None] = [None] * len(specs)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                indices, shard = pending.pop(ref)
                for index, result in zip(indices, self._collect(ref, shard), strict=True):
                    results[index] = result
                    if progress is not None:
                        progress(index, result)
        finally:
            for ref in pending:  # progress raised or the driver was interrupted
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
        return results  # type: ignore[return-value]

    def _slots(self) -> int:
        """How many shards the cluster can run at once: its GPUs (or CPUs) over one task's share."""
        resources = self._ray.cluster_resources()
        if self.num_gpus_per_trial > 0:
            return max(1, int(resources.get("GPU", 0) / self.num_gpus_per_trial))
        if self.num_cpus_per_trial > 0:
            return max(1, int(resources.get("CPU", 0) / self.num_cpus_per_trial))
        return 1

    def _shards(self, specs: list[TrialSpec]) -> list[tuple[list[int], Vectorize]]:
        """One task per vectorized shard (a population divided over the slots, or
        ``members_per_task`` members; the worker splits what does not fit its memory), and the
        per-trial specs in tasks of ``trials_per_task``."""
        vectorize = self.vectorize if self._trial_fn is run_trial else "off"
        if vectorize == "off":
            size = self.trials_per_task
            return [(list(range(k, min(k + size, len(specs)))), "off") for k in range(0, len(specs), size)]
        shards = plan(
            specs, vectorize, members_per_task=self.members_per_task, slots=self._slots(), fit_memory=False
        )
        # the worker plans its shard again (same mode): it records why a trial ran alone
        tasks = [(list(s.indices), vectorize) for s in shards if s.vectorized]
        alone = [i for s in shards if not s.vectorized for i in s.indices]
        size = self.trials_per_task
        tasks += [(alone[k : k + size], vectorize) for k in range(0, len(alone), size)]
        return tasks

    def _collect(self, ref: Any, shard: list[TrialSpec]) -> list[TrialResult]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as err:
            # Only what survives retries lands here (retry_exceptions=False, and trial exceptions
            # are results already): a worker that kept dying, a lost object, a cancelled task.
            text = f"{type(err).__name__}: {err} (after max_retries={self.max_retries})"
            return [failed_result(spec, text) for spec in shard]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_ray:
            self._ray.shutdown()
        self._remove_link()

    def _remove_link(self) -> None:
        if self._link_holder is not None:
            os.unlink(os.path.join(self._link_holder, "t"))
            os.rmdir(self._link_holder)
            self._link_holder = None

    def __repr__(self) -> str:
        return (
            f"RayExecutor(num_cpus_per_trial={self.num_cpus_per_trial:g}, "
            f"num_gpus_per_trial={self.num_gpus_per_trial:g}, max_retries={self.max_retries}, "
            f"trials_per_task={self.trials_per_task}, vectorize={self.vectorize!r})"
        )


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(kind: Literal["local", "ray"], **options: Any) -> Executor:
    """``LocalExecutor(**options)`` or ``RayExecutor(**options)`` by name.

    For ``"local"``, Ray-only options are accepted when ``None`` or at ``RayExecutor``'s default,
    so a command line can pass its flags unchanged; any other value is an error.
    """
    if kind not in EXECUTORS:
        raise invalid("executor kind", kind, " | ".join(EXECUTORS))
    if kind == "local":
        shared = inspect.signature(LocalExecutor.__init__).parameters
        ray_defaults = {
            name: p.default
            for name, p in inspect.signature(RayExecutor.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY and name not in shared
        }
        for name in [n for n in options if n in ray_defaults]:
            value = options.pop(name)
            if value is not None and value != ray_defaults[name]:
                raise invalid(
                    f"option {name} for the local executor", value, f"{ray_defaults[name]!r} (or use 'ray')"
                )
    return EXECUTORS[kind](**options)
