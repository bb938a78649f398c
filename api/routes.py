"""HTTP routes: thin; validation in :mod:`api.schemas`, logic in :mod:`api.services`."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

import lodo
import schedules
import tasks as task_registry
from tuner.strategies import describe_strategies

from . import schemas
from .services import ARTIFACT_TYPES, JobService, generation_view, job_view

_bearer = HTTPBearer(auto_error=False, description="LODOTUNE_API_TOKEN, when the service sets one.")
JOB_ID = r"^[0-9a-f]{32}$"
JobId = Annotated[str, PathParam(pattern=JOB_ID, description="A job id (32 hex digits).")]


def service(request: Request) -> JobService:
    return request.app.state.service


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = request.app.state.settings.api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "Missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


Service = Annotated[JobService, Depends(service)]
IdempotencyKey = Annotated[
    str | None,
    Header(max_length=255, pattern=r"^[\x21-\x7e]+$", description="Retry-safe POST: same key, same job."),
]

public = APIRouter()
router = APIRouter(dependencies=[Depends(require_token)])


@public.get("/healthz", tags=["service"])
def healthz(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {"status": "ok", "launcher": settings.launcher}


def _accepted(job, created: bool, response: Response) -> schemas.Accepted:
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/jobs/{job.id}"
    view = job_view(job)
    return schemas.Accepted(id=job.id, status=job.status, links=view.links)


ACCEPTED = {
    202: {"description": "Job created"},
    200: {"description": "Same Idempotency-Key: the same job"},
    409: {"model": schemas.Error},
}


@router.post("/tune", status_code=202, response_model=schemas.Accepted, responses=ACCEPTED, tags=["jobs"])
def post_tune(
    body: schemas.TuneRequest, svc: Service, response: Response, idempotency_key: IdempotencyKey = None
) -> schemas.Accepted:
    return _accepted(*svc.submit("tune", body, idempotency_key), response)


@router.post("/evaluate", status_code=202, response_model=schemas.Accepted, responses=ACCEPTED, tags=["jobs"])
def post_evaluate(
    body: schemas.EvaluateRequest, svc: Service, response: Response, idempotency_key: IdempotencyKey = None
) -> schemas.Accepted:
    return _accepted(*svc.submit("evaluate", body, idempotency_key), response)


@router.get("/jobs", response_model=schemas.JobPage, tags=["jobs"])
def list_jobs(
    svc: Service,
    status: schemas.JobStatus | None = None,
    task: Annotated[str | None, Query(max_length=64)] = None,
    optimizer: Annotated[str | None, Query(max_length=64)] = None,
    kind: schemas.JobKind | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> schemas.JobPage:
    rows, next_seq = svc.store.list(
        status=status,
        task=task,
        optimizer=optimizer,
        kind=kind,
        cursor=int(cursor) if cursor else None,
        limit=limit,
    )
    return schemas.JobPage(
        jobs=[job_view(r) for r in rows], next_cursor=str(next_seq) if next_seq is not None else None
    )


NOT_FOUND = {404: {"model": schemas.Error}}
NOT_READY = {404: {"model": schemas.Error}, 409: {"model": schemas.Error, "description": "Not there yet"}}


@router.get("/jobs/{job_id}", response_model=schemas.Job, responses=NOT_FOUND, tags=["jobs"])
def get_job(job_id: JobId, svc: Service) -> schemas.Job:
    return job_view(svc.get(job_id))


@router.get(
    "/jobs/{job_id}/generations",
    response_model=list[schemas.GenerationRecord],
    responses=NOT_FOUND,
    tags=["jobs"],
)
def get_generations(job_id: JobId, svc: Service) -> list[schemas.GenerationRecord]:
    return [generation_view(row) for row in svc.generations(job_id)]


@router.get("/jobs/{job_id}/hyperparameters", responses=NOT_READY, tags=["results"])
def get_hyperparameters(job_id: JobId, svc: Service) -> dict[str, Any]:
    """The tuned set: the same document as the CLI's hyperparameters.json."""
    return svc.result(job_id, "hyperparameters")


@router.get("/jobs/{job_id}/results", responses=NOT_READY, tags=["results"])
def get_results(job_id: JobId, svc: Service) -> dict[str, Any]:
    """The evaluation: per optimizer mean ± std of the window loss, diverged count, steps/s."""
    return svc.result(job_id, "results")


@router.get("/jobs/{job_id}/artifacts", responses=NOT_FOUND, tags=["results"])
def list_artifacts(job_id: JobId, svc: Service) -> dict[str, str]:
    return {name: f"/jobs/{job_id}/artifacts/{name}" for name in svc.artifacts(job_id)}


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    responses={**NOT_FOUND, 200: {"content": {t: {} for t in set(ARTIFACT_TYPES.values())}}},
    response_class=FileResponse,
    tags=["results"],
)
def get_artifact(
    job_id: JobId,
    name: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")],
    svc: Service,
) -> FileResponse:
    path = svc.artifact(job_id, name)
    return FileResponse(path, media_type=ARTIFACT_TYPES[path.suffix], filename=name)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.Job, responses=NOT_READY, tags=["jobs"])
def cancel_job(job_id: JobId, svc: Service) -> schemas.Job:
    """Stops the driver; finished generations and results are kept."""
    return job_view(svc.cancel(job_id))


@router.get("/jobs/{job_id}/events", responses=NOT_FOUND, tags=["jobs"])
async def job_events(job_id: JobId, svc: Service, request: Request) -> EventSourceResponse:
    """Server-Sent Events: ``progress`` (the job, on every change), ``generation`` (each finished
    generation's summary) and a last ``end`` with the final job when it is over."""
    await to_thread.run_sync(svc.get, job_id)
    interval = request.app.state.settings.poll_interval

    async def stream():
        seen_update, sent_generations = None, 0
        while True:
            job = await to_thread.run_sync(svc.store.get, job_id)
            view = job_view(job)
            rows = await to_thread.run_sync(svc.store.generations, job_id)
            for row in rows[sent_generations:]:
                summary = generation_view(row).model_dump(mode="json", exclude={"record"})
                yield ServerSentEvent(json.dumps(summary), event="generation", id=f"g{row.generation}")
            sent_generations = len(rows)
            if job.updated_at != seen_update:
                seen_update = job.updated_at
                yield ServerSentEvent(view.model_dump_json(), event="progress")
            if job.status in schemas.TERMINAL:
                yield ServerSentEvent(view.model_dump_json(), event="end")
                return
            await asyncio.sleep(interval)

    return EventSourceResponse(stream(), ping=15)


@router.get("/tasks", tags=["registries"])
def get_tasks() -> list[dict[str, Any]]:
    """Tasks with parameter counts, options and their GA schedules."""
    by_task: dict[str, list] = {}
    for schedule in schedules.describe_schedules():
        by_task.setdefault(schedule["task"], []).append(schedule)
    return [{**t, "schedules": by_task.get(t["name"], [])} for t in task_registry.describe()]


@router.get("/optimizers", tags=["registries"])
def get_optimizers() -> list[dict[str, Any]]:
    """Optimizers with hyperparameters (name, default, kind) and their GA search space."""
    out = []
    for entry in lodo.describe():
        space = None
        if entry["hyperparameters"]:
            space = schedules.space_for(entry["name"]).model_dump(mode="json")
        out.append({**entry, "search_space": space})
    return out


@router.get("/strategies", tags=["registries"])
def get_strategies() -> list[dict[str, Any]]:
    """The tuning strategies (ga, asha, onepass) with their settings; asha and onepass take theirs
    in a POST /tune body's ``strategy_options``."""
    return describe_strategies()
