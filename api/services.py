"""What the routes do: create and cancel jobs, shape rows into responses, find artifacts."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from . import schemas
from .launchers import Launcher
from .limits import check_capacity
from .models import GenerationRow, JobRow
from .settings import Settings
from .store import JobStore

ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ARTIFACT_TYPES = {
    ".json": "application/json",
    ".md": "text/markdown",
    ".png": "image/png",
    ".npz": "application/octet-stream",
    ".log": "text/plain",
}


RETRYABLE = ("failed", "cancelled")


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


LISTING_LENGTH = 64  # the store's task and optimizer columns (api/models.py)


def _listing(names: list[str], noun: str) -> str:
    """Names for a job's task or optimizer column: comma-joined where they fit, else counted (the
    spec keeps every name)."""
    joined = ",".join(names)
    return joined if len(joined) <= LISTING_LENGTH else f"{len(names)} {noun}"


class JobService:
    def __init__(self, store: JobStore, launcher: Launcher, settings: Settings) -> None:
        self.store, self.launcher, self.settings = store, launcher, settings

    def submit(
        self,
        kind: str,
        request: schemas.TuneRequest | schemas.EvaluateRequest | schemas.ReproduceRequest,
        idempotency_key: str | None,
    ) -> tuple[JobRow, bool]:
        if isinstance(request, schemas.ReproduceRequest):
            # every optimizer of its experiments runs; the task column lists the experiments
            task, optimizer, strategy = _listing(request.experiments, "experiments"), "all", None
        elif isinstance(request, schemas.EvaluateRequest):
            task, optimizer, strategy = request.task, _listing(request.optimizers, "optimizers"), None
            if request.from_job is not None:
                self._tuned_job(request.from_job)
        else:  # one-pass tunes SGD's lr, weight decay and momentum: its document says "sgd"
            task, optimizer, strategy = request.task, request.optimizer or "sgd", request.strategy
        key = (idempotency_key, request.fingerprint(kind)) if idempotency_key else None
        if key is None or self.store.job_for_key(*key) is None:  # a replay gets its job even when full
            check_capacity(self.store)
        job, created = self.store.create_job(
            kind=kind,
            spec=request.model_dump(mode="json"),
            task=task,
            optimizer=optimizer,
            strategy=strategy,
            launcher=self.launcher.name,
            run_root=self.settings.artifact_dir.resolve() / "jobs",
            idempotency=key,
        )
        if created:
            self.launcher.wake()
        return job, created

    def _tuned_job(self, job_id: str) -> JobRow:
        job = self.get(job_id)
        if job.kind != "tune" or self.store.result(job_id, "hyperparameters") is None:
            raise Conflict(f"from_job {job_id} has no tuned hyperparameters yet (status {job.status})")
        return job

    def get(self, job_id: str) -> JobRow:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"No job {job_id}")
        return job

    def cancel(self, job_id: str) -> JobRow:
        job = self.get(job_id)
        if job.status in schemas.TERMINAL:
            raise Conflict(f"Job {job_id} is already {job.status}")
        job = self.store.request_cancel(job_id)
        self.launcher.wake()
        return job

    def retry(self, job_id: str) -> JobRow:
        """Put a failed or cancelled job back in the queue: its next attempt (``attempt + 1``)
        resumes from what the store holds (finished generations, a tuned document), with a fresh
        budget of ``max_attempts`` lost drivers. Conflict for a queued, running or succeeded job."""
        job = self.get(job_id)
        if job.status not in RETRYABLE:
            raise Conflict(f"Job {job_id} is {job.status}: only a failed or cancelled job can be retried")
        retried = self.store.retry(job_id)
        if retried is None:  # it changed meanwhile
            raise Conflict(
                f"Job {job_id} is {self.get(job_id).status}: only a failed or cancelled job can be retried"
            )
        self.launcher.wake()
        return retried

    def result(self, job_id: str, name: str) -> dict[str, Any]:
        job = self.get(job_id)
        document = self.store.result(job_id, name)
        if document is None:
            raise Conflict(f"Job {job_id} has no {name} yet (status {job.status}, phase {job.phase})")
        return document

    def generations(self, job_id: str) -> list[GenerationRow]:
        self.get(job_id)
        return self.store.generations(job_id)

    def artifacts(self, job_id: str) -> dict[str, Path]:
        """Name → file of the job's downloadable files (run directory and evaluation directory;
        a reproduce job's also the plots its report names, ``bowl/hessian_error.png`` as
        ``bowl.hessian_error.png``). A symlink, or anything that resolves outside the job's run
        directory, is never one."""
        job = self.get(job_id)
        root = Path(job.run_dir)
        if root.is_symlink() or not root.is_dir():
            return {}
        base = root.resolve()

        def servable(name: str, path: Path) -> bool:
            if path.suffix not in ARTIFACT_TYPES or not ARTIFACT_NAME.match(name):
                return False
            links = [path, *path.parents[: len(path.relative_to(root).parts) - 1]]
            if any(p.is_symlink() for p in links):
                return False
            return path.is_file() and path.resolve().is_relative_to(base)

        found = {}
        for folder in (root, root / "evaluation"):
            if folder.is_symlink() or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if servable(path.name, path):
                    found.setdefault(path.name, path)
        if job.kind == "reproduce":
            report = self.store.result(job_id, "report") or {}
            for section in report.get("experiments", {}).values():
                for relative in map(Path, map(str, section.get("plots", {}).values())):
                    if relative.is_absolute() or ".." in relative.parts:
                        continue
                    name = ".".join(relative.parts)
                    if servable(name, root / relative):
                        found.setdefault(name, root / relative)
        return found

    def artifact(self, job_id: str, name: str) -> Path:
        if not ARTIFACT_NAME.match(name):
            raise NotFound(f"Invalid artifact name {name!r} (allowed: letters, digits, '.', '_', '-')")
        found = self.artifacts(job_id)
        if name not in found:
            raise NotFound(f"No artifact {name!r} (allowed: {' | '.join(found) or 'none yet'})")
        return found[name]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _progress(job: Any) -> schemas.Progress:
    return schemas.Progress.model_construct(
        generation=job.generation,
        generations=job.generations,
        trials_done=job.trials_done,
        trials_total=job.trials_total,
        best_fitness=_finite(job.best_fitness),
        phase=job.phase,
        study=job.study,
        studies=job.studies,
    )


def job_view(job: Any) -> schemas.Job:
    """The whole document of a job: a :class:`~api.models.JobRow` or a row of the store's
    ``VIEW_COLUMNS``. Built without validation (``model_construct``): every value comes from the
    store, whose columns have the schema's types."""
    base = f"/jobs/{job.id}"
    links = {
        "self": base,
        "generations": f"{base}/generations",
        "events": f"{base}/events",
        "artifacts": f"{base}/artifacts",
        "cancel": f"{base}/cancel",
        "retry": f"{base}/retry",
    }
    if job.kind == "reproduce":
        links["report"] = f"{base}/report"
    else:
        links["results"] = f"{base}/results"
    if job.kind == "tune":
        links["hyperparameters"] = f"{base}/hyperparameters"
    return schemas.Job.model_construct(
        id=job.id,
        kind=job.kind,
        status=job.status,
        task=job.task,
        optimizer=job.optimizer,
        strategy=job.strategy,
        attempt=job.attempt,
        launcher=job.launcher,
        driver=job.driver,
        progress=_progress(job),
        error=job.error,
        attempts=list(job.attempts or []),
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        spec=job.spec,
        links=links,
    )


def job_summary(job: Any) -> dict[str, Any]:
    """A job in a list page (a row of the store's ``SUMMARY_COLUMNS``) as the plain dict of
    :class:`~api.schemas.JobSummary` (no model per row: a page is up to 200 of them)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "task": job.task,
        "optimizer": job.optimizer,
        "strategy": job.strategy,
        "attempt": job.attempt,
        "progress": {
            "generation": job.generation,
            "generations": job.generations,
            "trials_done": job.trials_done,
            "trials_total": job.trials_total,
            "best_fitness": _finite(job.best_fitness),
            "phase": job.phase,
            "study": job.study,
            "studies": job.studies,
        },
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
        "links": {"self": f"/jobs/{job.id}"},
    }


def job_page(rows: list[Any], next_seq: int | None) -> dict[str, Any]:
    """:class:`~api.schemas.JobPage` as a plain dict (``pydantic_core.to_json`` writes its datetimes
    as pydantic does for ``GET /jobs/{id}``)."""
    return {
        "jobs": [job_summary(r) for r in rows],
        "next_cursor": str(next_seq) if next_seq is not None else None,
    }


def generation_view(row: GenerationRow) -> schemas.GenerationRecord:
    return schemas.GenerationRecord(
        generation=row.generation,
        best_fitness=_finite(row.best_fitness),
        elite_mean=row.record.get("elite_mean", {}),
        record=row.record,
    )
