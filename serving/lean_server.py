"""The lean model server: one `LooplineRuntime` behind a bare ASGI V2 app and a gRPC service.

`python -m loopline.serving.lean_server <folder>` reads the same files an MLServer reads
(`<folder>/settings.json` for ports, `<folder>/models/<name>/model-settings.json` for the
model) and serves the same runtime, so the local serving backend can run either host from one
set of files. It exists for latency: MLServer's REST and gRPC stacks cost ~10x the runtime's
own work per request (benchmarks/results/serving.json); here a request goes socket →
uvicorn (httptools, uvloop) → `V2App` → `runtime.infer` and back.

With `LOOPLINE_ASYNC_REDIS_URL` set it also serves asynchronous inference: the REST routes
of `async_http` and a worker (`async_worker`) consuming the model's Redis request stream.

What MLServer adds and this host does not: adaptive batching (the local backend runs
MLServer when a Model asks for it), parallel inference workers, several models per server,
tracing and its own `rest_server_*` metrics. On a cluster Seldon Core 2 runs MLServer with the
same runtime; `loopline_*` metrics, payload sampling and canary splits are the runtime's and
behave the same on both hosts.

Start-up order: metrics and both listeners first, then the model loads in the background, so
`/v2/health/live` answers at once and `/v2/health/ready` turns 200 only when the model is
loaded. A model that cannot load exits the process with its error on stderr; the supervisor
(`local.py`) restarts it with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn
from mlserver.settings import Settings

from loopline import auth
from loopline.serving.async_settings import AsyncSettings
from loopline.serving.async_store import AsyncStore
from loopline.serving.async_worker import AsyncWorker
from loopline.serving.runtime_slot import RuntimeSlot
from loopline.serving.settings import ServingSettings
from loopline.serving.v2_asgi import V2App
from loopline.serving.v2_grpc import V2Servicer, add_to_server

log = logging.getLogger("loopline.serving.lean_server")

GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class LeanServerError(RuntimeError):
    """The folder does not hold what a model server needs; the message says what is missing."""


def find_model_settings(folder: Path) -> Path:
    """The one `models/*/model-settings.json` of a server folder."""
    found = sorted((folder / "models").glob("*/model-settings.json"))
    if len(found) != 1:
        raise LeanServerError(
            f"{folder}/models must hold exactly one <name>/model-settings.json, found "
            f"{[str(p.relative_to(folder)) for p in found] or 'none'}"
        )
    return found[0]


def read_server_settings(folder: Path) -> Settings:
    path = folder / "settings.json"
    if not path.is_file():
        raise LeanServerError(f"{path} is missing (ports and host of the server)")
    return Settings.model_validate(json.loads(path.read_text()))


class _Uvicorn(uvicorn.Server):
    """uvicorn whose SIGTERM/SIGINT only end `serve()`, so the gRPC server and the runtime are
    shut down afterwards (stock uvicorn re-raises the signal once it has stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def serve(folder: Path) -> int:
    from prometheus_client import start_http_server

    from loopline import __version__

    settings = read_server_settings(folder)
    slot = RuntimeSlot(find_model_settings(folder))
    token = auth.load_token(what=f"model server {slot.name}")
    host = settings.host or "127.0.0.1"
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=host)
    default_limit = ServingSettings.model_fields["max_request_bytes"].default

    async_settings = AsyncSettings()
    store = AsyncStore(async_settings, slot.name) if async_settings.enabled else None
    app = V2App(
        slot,
        server_version=__version__,
        max_body_bytes=default_limit,
        token=token,
        async_store=store,
    )
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
    )
    add_to_server(V2Servicer(slot, server_version=__version__), grpc_server)
    grpc_server.add_insecure_port(f"{host}:{settings.grpc_port}")
    await grpc_server.start()
    rest = _Uvicorn(
        uvicorn.Config(
            app,
            host=host,
            port=settings.http_port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            proxy_headers=False,  # loopback or behind Seldon's envoy: no forwarded client
        )
    )
    failed: list[BaseException] = []

    async def load() -> None:
        try:
            runtime = await slot.load()
        except Exception as exc:
            log.error("model %s could not load: %s", slot.name, slot.load_error or exc)
            failed.append(exc)
            rest.should_exit = True
            return
        assert runtime.config is not None
        app.max_body_bytes = runtime.config.max_request_bytes
        log.info(
            "serving %s: REST %s:%s, gRPC %s:%s, metrics %s:%s",
            slot.name,
            host,
            settings.http_port,
            host,
            settings.grpc_port,
            host,
            settings.metrics_port,
        )

    loading = asyncio.create_task(load())
    worker = None
    if store is not None:
        worker = AsyncWorker(slot, store, async_settings.consumer_name())
        working = asyncio.create_task(worker.run())
        log.info("async inference on: consumer %s of %s", worker.consumer, store.keys.group)
    try:
        await rest.serve()
    finally:
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        if worker is not None and store is not None:
            worker.stop()
            working.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await working
            await store.close()
        await grpc_server.stop(grace=2)
        await slot.unload()
    return 1 if failed or not rest.started else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m loopline.serving.lean_server <server folder>", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # MLServer's gRPC converters build pydantic models with the deprecated `construct`.
    warnings.filterwarnings("ignore", "The `construct` method is deprecated")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(serve(Path(args[0])))
    except (auth.AuthConfigError, LeanServerError) as exc:
        print(f"lean server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
