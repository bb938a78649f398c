"""The FastAPI application: ``create_app(settings)``; ``lodotune serve`` runs it with uvicorn."""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import routes
from .launchers import make_launcher
from .limits import ServiceBusy, get_limits
from .services import Conflict, JobService, NotFound
from .settings import Settings
from .store import IdempotencyConflict, JobStore, migrate

log = logging.getLogger("lodotune.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a 422 tells about the input it refuses: enough to find the mistake, never the whole body.
EXCERPT_CHARS = 200
MESSAGE_CHARS = 1000
MAX_ERRORS = 20
UNAUTHORIZED = "Missing or wrong bearer token"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _text(value: str, limit: int) -> str:
    """``value`` shortened to ``limit`` characters, anything UTF-8 cannot carry escaped."""
    value = value[: limit * 8].encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else value[:limit] + "…"


def excerpt(value: Any) -> Any:
    """A refused input as a 422 may show it: short JSON values as they are, anything longer (or
    not JSON: NaN, lone surrogates, huge integers) as a string of at most ~200 characters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, int) and abs(value) <= 2**53:
        return value
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, default=repr)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # NaN, a lone surrogate, a cycle
        return _text(repr(value), EXCERPT_CHARS)
    if len(text) <= EXCERPT_CHARS and not isinstance(value, int):
        return value if isinstance(value, str | list | dict) else text
    return _text(text, EXCERPT_CHARS)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """loc / msg / type of each error, the input as an excerpt; at most ``MAX_ERRORS`` of them."""
    out = [
        {
            "loc": [p if isinstance(p, int) else _text(str(p), EXCERPT_CHARS) for p in error.get("loc", ())],
            "msg": _text(str(error.get("msg", "")), MESSAGE_CHARS),
            "type": str(error.get("type", "")),
            "input": excerpt(error.get("input")),
        }
        for error in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        out.append(
            {
                "loc": ["body"],
                "msg": f"… and {len(errors) - MAX_ERRORS} more errors",
                "type": "too_many_errors",
                "input": None,
            }
        )
    return out


class GuardMiddleware:
    """Pure ASGI, before anything reads the body: the bearer token first (401 for every path but
    the public ones when a token is set), then the body size (413 beyond ``max_body_bytes``, by
    Content-Length before reading, or while reading a body sent without one). The body it read
    (at most ``max_body_bytes``) is handed on to the app unchanged."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, public: Callable[[str], bool], max_body_bytes: int
    ):
        self.app, self.token, self.public, self.max_body_bytes = app, token, public, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and not self.public(scope["path"]) and not self._authorized(headers):
            await _error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"Request body too large (allowed: at most {self.max_body_bytes} bytes, "
            "the server's limit LODOTUNE_MAX_BODY_BYTES)"
        )
        response = _error(413, message, {"Connection": "close"})
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages``, then the client's own (http.disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limits = get_limits()

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
        docs_url=None,  # routes.py serves the docs pages, offline
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.limits = limits
    app.state.stream_slots = routes.StreamSlots(limits.max_event_streams)
    app.include_router(routes.public)
    app.include_router(routes.router)

    public_paths = [route.path_regex for route in routes.public.routes if hasattr(route, "path_regex")]

    def is_public(path: str) -> bool:
        return path == app.openapi_url or any(regex.match(path) for regex in public_paths)

    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    app.add_middleware(GuardMiddleware, token=token, public=is_public, max_body_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(list(err.errors()))}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, err: NotFound) -> JSONResponse:
        return _error(404, str(err))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, err: Conflict) -> JSONResponse:
        return _error(409, str(err))

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency(request: Request, err: IdempotencyConflict) -> JSONResponse:
        return _error(409, f"Idempotency-Key {err} was used with another request body")

    @app.exception_handler(ServiceBusy)
    async def _busy(request: Request, err: ServiceBusy) -> JSONResponse:
        return _error(503, str(err), {"Retry-After": str(err.retry_after)})

    @app.exception_handler(ValueError)
    async def _server_bug(request: Request, err: ValueError) -> JSONResponse:
        # requests are validated by their schemas (422 above): a ValueError here is our bug
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return _error(500, f"Internal server error ({type(err).__name__}); the server log has the details")

    return app
