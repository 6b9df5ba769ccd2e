"""Asynchronous inference on the MLServer host, as the lean host serves it.

With `LOOPLINE_ASYNC_REDIS_URL` set, `mlserver_host` gives every model MLServer loads its own
request stream, store and worker (`AsyncWorker`, one consumer of the model's group) and
answers the asynchronous REST routes (`POST /v2/models/{name}/infer/async`, `GET
.../infer/async/{id}`) with `async_http`, the lean host's code. MLServer hosts any number of
models and loads, reloads and unloads them at its agent's or repository API's request (Seldon
Core 2 drives it so), so workers follow its model registry's hooks instead of a fixed slot:
a worker starts when a model starts loading (it reads nothing until the model is ready), a
reload hands it the new instance, an unload stops it. A model is one `LooplineRuntime` in
this process (`parallel_workers: 0`, as Loopline's servers run MLServer); another runtime
class gets no worker and its routes answer 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

from mlserver.model import MLModel

from loopline.serving.async_http import handle_async
from loopline.serving.async_messages import AsyncMessageError, async_route
from loopline.serving.async_settings import AsyncSettings
from loopline.serving.async_store import AsyncStore
from loopline.serving.async_worker import AsyncWorker
from loopline.serving.runtime import LooplineRuntime
from loopline.serving.runtime_slot import ModelNotFound, ModelNotReady, RuntimeSlot
from loopline.serving.settings import ServingSettings
from loopline.serving.v2_asgi import ASGIApp, Receive, Scope, Send, error_body, respond

log = logging.getLogger(__name__)

_DEFAULT_LIMIT = ServingSettings.model_fields["max_request_bytes"].default


def _is_loopline(model: MLModel) -> bool:
    """Duck-typed: MLServer imports the implementation's module anew when it loads a model,
    so its `LooplineRuntime` is not the class imported here."""
    return callable(getattr(model, "score_inputs", None)) and callable(
        getattr(model, "identify", None)
    )


class ModelSlot:
    """What `async_http` and `AsyncWorker` ask of `RuntimeSlot` (`name`, `ready`, `runtime`,
    `get`), over the model instance MLServer holds now."""

    def __init__(self, model: LooplineRuntime) -> None:
        self.name = model.name
        self.model = model

    @property
    def runtime(self) -> LooplineRuntime | None:
        return self.model if self.model.ready else None

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    def get(self, name: str) -> LooplineRuntime:
        if name != self.name:
            raise ModelNotFound(name, self.name)
        runtime = self.runtime
        if runtime is None:
            raise ModelNotReady(name, "loading")
        return runtime


@dataclass
class _Hosted:
    slot: ModelSlot
    store: AsyncStore
    worker: AsyncWorker
    task: asyncio.Task[None]


class AsyncModels:
    """One store, slot and worker per Loopline model MLServer loads."""

    def __init__(self, settings: AsyncSettings) -> None:
        self.settings = settings
        self.hosted: dict[str, _Hosted] = {}

    def install(self, server: Any) -> None:
        """Follow `server`'s model registry (before `start`: each model's registry is made
        with these same hook lists) and answer the asynchronous routes in front of its app."""
        registry = server._model_registry
        registry._on_model_load.append(self.loading)
        registry._on_model_reload.append(self.reloading)
        registry._on_model_unload.append(self.unloading)
        server._rest_server._app.add_middleware(AsyncRoutes, models=self)

    async def loading(self, model: MLModel) -> MLModel:
        if not _is_loopline(model):
            return model
        runtime = cast(LooplineRuntime, model)
        held = self.hosted.get(model.name)
        if held is not None:  # another version of a hosted name: the newest answers
            held.slot.model = runtime
            return model
        slot = ModelSlot(runtime)
        store = AsyncStore(self.settings, model.name)
        worker = AsyncWorker(cast(RuntimeSlot, slot), store, self.settings.consumer_name())
        task = asyncio.get_running_loop().create_task(worker.run())
        self.hosted[model.name] = _Hosted(slot, store, worker, task)
        log.info("async inference on: consumer %s of %s", worker.consumer, store.keys.group)
        return model

    async def reloading(self, old: MLModel, new: MLModel) -> MLModel:
        held = self.hosted.get(new.name)
        if held is not None and _is_loopline(new):
            held.slot.model = cast(LooplineRuntime, new)
        return new

    async def unloading(self, model: MLModel) -> MLModel:
        held = self.hosted.get(model.name)
        if held is None or held.slot.model is not model:
            return model  # an older instance going after a reload: the worker stays
        del self.hosted[model.name]
        held.worker.stop()
        held.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held.task
        await held.store.close()
        return model


class AsyncRoutes:
    """ASGI middleware: the asynchronous routes of the hosted models; the rest passes."""

    def __init__(self, app: ASGIApp, models: AsyncModels) -> None:
        self.app = app
        self.models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or "/infer/" not in path:
            await self.app(scope, receive, send)
            return
        try:
            route = async_route(path)
        except AsyncMessageError as exc:
            await respond(send, 400, error_body(str(exc)))
            return
        if route is None:
            await self.app(scope, receive, send)
            return
        held = self.models.hosted.get(route.model)
        if held is None:
            hosted = ", ".join(sorted(self.models.hosted)) or "none"
            message = f"model {route.model!r} not found; this server hosts {hosted}"
            await respond(send, 404, error_body(message))
            return
        runtime = held.slot.runtime
        config = runtime.config if runtime is not None else None
        limit = config.max_request_bytes if config is not None else _DEFAULT_LIMIT
        slot = cast(RuntimeSlot, held.slot)
        await handle_async(held.store, slot, limit, scope, receive, send, route)
