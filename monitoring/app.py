"""The drift monitor's HTTP API (FastAPI), one app per monitor.

`POST /v1/samples` only queues rows and answers 202 at once; testing happens on the monitor's
worker thread, so a slow window never slows a model server down.

What changes state needs the Model's bearer token (`loopline.auth`): `POST /v1/samples`
(forged rows could confirm drift and start a retraining) and `POST /v1/reference`. Without a
token they answer 401 with `WWW-Authenticate: Bearer`, with another one 403, before the body
is read. Status, health, readiness and metrics stay open: probes and Prometheus have no token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loopline import auth
from loopline.samples import SAMPLES_PATH, SampleBatch

from .service import DriftMonitor

STATUS_PATH = "/v1/status"
REFERENCE_PATH = "/v1/reference"

log = logging.getLogger(__name__)


def require_token(token: str | None) -> Any:
    """A FastAPI dependency that lets a request through only with `token` (None: anyone,
    authentication disabled for development)."""

    async def dependency(authorization: Annotated[str | None, Header()] = None) -> None:
        verdict = auth.check(authorization, token)
        if verdict is auth.Verdict.MISSING:
            raise HTTPException(
                status_code=401,
                detail=auth.denial_message(verdict),
                headers={"WWW-Authenticate": auth.CHALLENGE},
            )
        if verdict is auth.Verdict.FORBIDDEN:
            raise HTTPException(status_code=403, detail=auth.denial_message(verdict))

    return Depends(dependency)


def create_app(monitor: DriftMonitor, *, token: str | None, manage: bool = True) -> FastAPI:
    """The app serving `monitor`; with `manage`, the app starts and stops its worker.
    `token` is what state-changing calls must carry; None turns the check off (warned)."""
    if token is None:
        log.warning(
            "drift monitor of %s runs without authentication: anyone who reaches it can "
            "submit samples and reload its reference",
            monitor.model,
        )
    authorized = require_token(token)

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

    @app.post(SAMPLES_PATH, status_code=202, dependencies=[authorized])
    async def samples(batch: SampleBatch) -> dict[str, Any]:
        if batch.model != monitor.model:
            raise HTTPException(
                status_code=422,
                detail=f"batch is for model {batch.model!r}; this monitor watches {monitor.model!r}",
            )
        return monitor.submit(batch)

    @app.get(STATUS_PATH)
    async def status() -> dict[str, Any]:
        return monitor.status()

    @app.post(REFERENCE_PATH, dependencies=[authorized])
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
