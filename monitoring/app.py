"""The drift monitor's HTTP API (FastAPI), one app per monitor.

`POST /v1/samples` only queues rows and answers 202 at once; testing happens on the monitor's
worker thread, so a slow window never slows a model server down.

What changes state needs the Model's bearer token (`loopline.auth`): `POST /v1/samples`
(forged rows could confirm drift and start a retraining) and `POST /v1/reference`. Without a
token they answer 401 with `WWW-Authenticate: Bearer`, with another one 403, before the body
is read (`TokenGuard`). Status, health, readiness and metrics stay open: probes and Prometheus
have no token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from loopline import auth
from loopline.samples import SAMPLES_PATH, SampleBatch

from .intake import parse_samples
from .service import DriftMonitor

STATUS_PATH = "/v1/status"
REFERENCE_PATH = "/v1/reference"

log = logging.getLogger(__name__)


GUARDED_PATHS = frozenset({SAMPLES_PATH, REFERENCE_PATH})

_SAMPLES_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SampleBatch.model_json_schema(by_alias=True)}},
    }
}


class TokenGuard:
    """ASGI middleware: the guarded paths only with the token (None: anyone, authentication
    disabled for development). A middleware rather than a FastAPI dependency because FastAPI
    reads and validates the body before it runs dependencies, so a caller without the token
    would get the body's 422s and the app would parse whatever it sends."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in GUARDED_PATHS:
            presented = Headers(scope=scope).get("authorization")
            verdict = auth.check(presented, self.token)
            if verdict is not auth.Verdict.ALLOWED:
                headers = (
                    {"WWW-Authenticate": auth.CHALLENGE}
                    if verdict is auth.Verdict.MISSING
                    else None
                )
                response = JSONResponse(
                    {"detail": auth.denial_message(verdict)}, verdict.value, headers=headers
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(monitor: DriftMonitor, *, token: str | None, manage: bool = True) -> FastAPI:
    """The app serving `monitor`; with `manage`, the app starts and stops its worker.
    `token` is what state-changing calls must carry; None turns the check off (warned)."""
    if token is None:
        log.warning(
            "drift monitor of %s runs without authentication: anyone who reaches it can "
            "submit samples and reload its reference",
            monitor.model,
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage:
            monitor.start()
        try:
            yield
        finally:
            if manage:
                await anyio.to_thread.run_sync(monitor.stop)

    app = FastAPI(title=f"Loopline drift monitor ({monitor.model})", lifespan=lifespan)

    app.add_middleware(TokenGuard, token=token)

    # The body is read raw and parsed straight into arrays (`intake`); the schema is still the
    # batch model's, for clients reading the OpenAPI document.
    @app.post(SAMPLES_PATH, status_code=202, openapi_extra=_SAMPLES_BODY)
    async def samples(request: Request) -> dict[str, Any]:
        try:
            sample = parse_samples(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from exc
        if sample.model != monitor.model:
            raise HTTPException(
                status_code=422,
                detail=f"batch is for model {sample.model!r}; this monitor watches {monitor.model!r}",
            )
        return monitor.submit(sample)

    @app.get(STATUS_PATH)
    async def status() -> dict[str, Any]:
        return monitor.status()

    @app.post(REFERENCE_PATH)
    async def reference(force: bool = False) -> dict[str, Any]:
        try:
            changed = await anyio.to_thread.run_sync(lambda: monitor.reload_reference(force=force))
        except Exception as exc:
            raise HTTPException(status_code=503, detail=f"reference not loaded: {exc}") from exc
        ref = monitor.reference
        return {"changed": changed, "version": ref.version if ref else None}

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(content="ok\n", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        if monitor.reference is None:
            return Response(content=f"no reference loaded: {monitor.last_error}\n", status_code=503)
        return Response(content="ok\n", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(monitor.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
