"""The FastAPI application: ``create_app(settings)``; ``lodotune serve`` runs it with uvicorn."""

from __future__ import annotations

from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from . import routes
from .launchers import make_launcher
from .services import Conflict, JobService, NotFound
from .settings import Settings
from .store import IdempotencyConflict, JobStore, migrate


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        to_thread.current_default_thread_limiter().total_tokens = settings.threads
        settings.artifact_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.resolved_database_url)
        store = JobStore(settings.resolved_database_url)
        launcher = make_launcher(store, settings)
        app.state.service = JobService(store, launcher, settings)
        launcher.start()  # resumes jobs a previous process left running
        try:
            yield
        finally:
            launcher.close()
            store.close()

    app = FastAPI(
        title="lodotune",
        summary="Tune and compare optimizers with the LODO paper's genetic algorithm.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(routes.public)
    app.include_router(routes.router)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, err: NotFound) -> JSONResponse:
        return _error(404, str(err))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, err: Conflict) -> JSONResponse:
        return _error(409, str(err))

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency(request: Request, err: IdempotencyConflict) -> JSONResponse:
        return _error(409, f"Idempotency-Key {err} was used with another request body")

    @app.exception_handler(ValueError)
    async def _invalid(request: Request, err: ValueError) -> JSONResponse:
        return _error(422, str(err))

    return app
