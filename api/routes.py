"""HTTP routes: thin; validation in :mod:`api.schemas`, logic in :mod:`api.services`."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from importlib import resources
from typing import Annotated, Any

import pydantic_core
from anyio import to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

import lodo
import schedules
import tasks as task_registry
from tuner.reproduce import describe_experiments
from tuner.strategies import describe_strategies

from . import schemas
from .services import ARTIFACT_TYPES, JobService, NotFound, generation_view, job_page, job_view

_bearer = HTTPBearer(auto_error=False, description="LODOTUNE_API_TOKEN, when the service sets one.")
JOB_ID = r"^[0-9a-f]{32}$"
JobId = Annotated[str, PathParam(pattern=JOB_ID, description="A job id (32 hex digits).")]


def service(request: Request) -> JobService:
    return request.app.state.service


async def require_token(  # no I/O: async saves a thread-pool hop per request
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
UNAUTHORIZED = {401: {"model": schemas.Error, "description": "Missing or wrong bearer token"}}
router = APIRouter(dependencies=[Depends(require_token)], responses=UNAUTHORIZED)
# the docs pages' scripts and styles, served from an installed package: no CDN, works offline
DOCS_ASSETS = resources.files("fastapi_offline") / "static"
DOCS_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"}
DOCS_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@public.get("/healthz", tags=["service"])
def healthz(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {"status": "ok", "launcher": settings.launcher}


@public.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="lodotune API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


@public.get("/redoc", include_in_schema=False)
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="lodotune API",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )


@public.get("/docs-assets/{name}", include_in_schema=False)
def docs_asset(name: str) -> Response:
    if name not in DOCS_FILES:
        raise HTTPException(404, f"No docs asset {name!r}")
    suffix = name[name.rindex(".") :]
    return Response(DOCS_ASSETS.joinpath(name).read_bytes(), media_type=DOCS_TYPES[suffix])


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


@router.post(
    "/reproduce", status_code=202, response_model=schemas.Accepted, responses=ACCEPTED, tags=["jobs"]
)
def post_reproduce(
    body: schemas.ReproduceRequest, svc: Service, response: Response, idempotency_key: IdempotencyKey = None
) -> schemas.Accepted:
    """The paper's experiments beside its numbers, as ``lodotune reproduce`` runs them."""
    return _accepted(*svc.submit("reproduce", body, idempotency_key), response)


# registry names (an evaluation job's optimizer filter is its comma-joined list): no NUL, no
# control characters, nothing a database driver could refuse
NAME_FILTER = r"^[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}$"


def _json(model) -> Response:
    """A view built from the store's typed columns, serialized once by pydantic-core; the route's
    response model still documents it (FastAPI would dump, validate and serialize it again)."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/jobs", response_model=schemas.JobPage, tags=["jobs"])
def list_jobs(
    request: Request,
    status: schemas.JobStatus | None = None,
    task: Annotated[str | None, Query(pattern=NAME_FILTER)] = None,
    optimizer: Annotated[str | None, Query(pattern=NAME_FILTER)] = None,
    kind: schemas.JobKind | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Newest first, one summary per job (no spec, no attempts: ``GET /jobs/{id}`` has those)."""
    rows, next_seq = service(request).store.list(
        status=status,
        task=task,
        optimizer=optimizer,
        kind=kind,
        cursor=int(cursor) if cursor else None,
        limit=limit,
    )
    return Response(pydantic_core.to_json(job_page(rows, next_seq)), media_type="application/json")


NOT_FOUND = {404: {"model": schemas.Error}}
NOT_READY = {404: {"model": schemas.Error}, 409: {"model": schemas.Error, "description": "Not there yet"}}


@router.get("/jobs/{job_id}", response_model=schemas.Job, responses=NOT_FOUND, tags=["jobs"])
def get_job(job_id: JobId, request: Request) -> Response:
    # service(request) called here, not as a dependency: a sync dependency is one more hop
    # through the thread pool per request
    row = service(request).store.get_view(job_id)
    if row is None:
        raise NotFound(f"No job {job_id}")
    return _json(job_view(row))


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


@router.get("/jobs/{job_id}/report", responses=NOT_READY, tags=["results"])
def get_report(job_id: JobId, svc: Service) -> dict[str, Any]:
    """A reproduce job's report: the same document as the CLI's report.json (rows with verdicts)."""
    return svc.result(job_id, "report")


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


@router.post("/jobs/{job_id}/retry", response_model=schemas.Job, responses=NOT_READY, tags=["jobs"])
def retry_job(job_id: JobId, svc: Service) -> schemas.Job:
    """Queues a failed or cancelled job again: it resumes from its last stored state as the next
    attempt (409 for a queued, running or succeeded job)."""
    return job_view(svc.retry(job_id))


class StreamSlots:
    """A cap on concurrent event streams: each holds a database poll loop and a connection."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open, self._lock = limit, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


def _resume_point(last_event_id: str | None) -> int:
    """Generations already delivered, from a reconnecting client's ``Last-Event-ID``."""
    return int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 7 else 0


STREAM_RESPONSES = {
    **NOT_FOUND,
    503: {"model": schemas.Error, "description": "Too many open event streams: retry later"},
}


@router.get("/jobs/{job_id}/events", responses=STREAM_RESPONSES, tags=["jobs"])
async def job_events(
    job_id: JobId,
    svc: Service,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=16)] = None,
) -> EventSourceResponse:
    """Server-Sent Events: ``progress`` (the job, on every change; a queued job says so),
    ``generation`` (each finished generation's summary) and a last ``end`` with the final job.
    Every event's id is the number of generations delivered so far: a client that reconnects
    with ``Last-Event-ID`` gets only the generations it missed. Comments keep the connection
    alive every 15 s; beyond ``LODOTUNE_MAX_EVENT_STREAMS`` open streams the answer is a 503."""
    await to_thread.run_sync(svc.get, job_id)
    settings = request.app.state.settings
    slots: StreamSlots = request.app.state.stream_slots
    if not slots.take():
        raise HTTPException(
            503, f"{slots.limit} event streams are open: retry later", headers={"Retry-After": "5"}
        )
    sent = _resume_point(last_event_id)

    async def stream():
        nonlocal sent
        seen_update = None
        try:
            while True:
                job = await to_thread.run_sync(svc.store.get, job_id)
                view = job_view(job)
                rows = await to_thread.run_sync(svc.store.generations, job_id)
                for row in rows[sent:]:
                    summary = generation_view(row).model_dump(mode="json", exclude={"record"})
                    sent += 1
                    yield ServerSentEvent(json.dumps(summary), event="generation", id=str(sent))
                if job.updated_at != seen_update:
                    seen_update = job.updated_at
                    yield ServerSentEvent(view.model_dump_json(), event="progress", id=str(sent))
                if job.status in schemas.TERMINAL:
                    yield ServerSentEvent(view.model_dump_json(), event="end", id=str(sent))
                    return
                await asyncio.sleep(settings.poll_interval)
        finally:
            slots.give_back()

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


@router.get("/experiments", tags=["registries"])
def get_experiments() -> list[dict[str, Any]]:
    """The experiments POST /reproduce runs: title, task, optimizers and their size per scale."""
    return describe_experiments()


@router.get("/strategies", tags=["registries"])
def get_strategies() -> list[dict[str, Any]]:
    """The tuning strategies (ga, asha, onepass) with their settings; asha and onepass take theirs
    in a POST /tune body's ``strategy_options``."""
    return describe_strategies()
