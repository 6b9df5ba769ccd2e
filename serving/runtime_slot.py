"""`RuntimeSlot`: the one `LooplineRuntime` a lean server hosts, and how it is swapped.

The lean server (`lean_server.py`) answers health probes before the model has loaded, so
the slot starts empty and readiness means "a runtime is in the slot". A reload builds and
loads a new runtime from the model-settings file beside the old one and swaps it in only once
it is ready: requests in flight finish on the old runtime, new ones go to the new one, and a
reload that fails leaves the old one serving (the same contract as MLServer's
`POST /v2/repository/models/{name}/load`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mlserver.errors import MLServerError
from mlserver.repository.load import load_model_settings

from loopline.serving.runtime import LooplineRuntime

log = logging.getLogger(__name__)


class ModelNotFound(MLServerError):
    """The URL names a model this server does not host (HTTP 404, gRPC NOT_FOUND)."""

    def __init__(self, name: str, hosted: str) -> None:
        super().__init__(f"model {name!r} not found; this server hosts {hosted!r}", 404)


class ModelNotReady(MLServerError):
    """The model is still loading, or its load failed (HTTP 503)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} is not ready: {reason}", 503)


class RuntimeSlot:
    """Holds the hosted runtime; `get(name)` is the per-request lookup."""

    def __init__(self, model_settings_path: Path) -> None:
        self.model_settings_path = model_settings_path
        self.name = load_model_settings(str(model_settings_path)).name
        self.runtime: LooplineRuntime | None = None
        self.load_error = ""
        self._reload_lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    def get(self, name: str) -> LooplineRuntime:
        if name != self.name:
            raise ModelNotFound(name, self.name)
        runtime = self.runtime
        if runtime is None:
            raise ModelNotReady(name, self.load_error or "loading")
        return runtime

    async def load(self) -> LooplineRuntime:
        """(Re)load from the settings file; the old runtime keeps serving until this returns."""
        async with self._reload_lock:
            settings = load_model_settings(str(self.model_settings_path))
            if settings.name != self.name:
                raise MLServerError(
                    f"{self.model_settings_path} now names model {settings.name!r}, "
                    f"this server hosts {self.name!r}",
                    400,
                )
            fresh = LooplineRuntime(settings)
            try:
                await fresh.load()
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
                await _quietly_unload(fresh)
                raise
            fresh.ready = True
            old, self.runtime, self.load_error = self.runtime, fresh, ""
            if old is not None:
                await _quietly_unload(old)
                fresh.publish_version_info(1)
            return fresh

    async def unload(self) -> None:
        async with self._reload_lock:
            old, self.runtime = self.runtime, None
            if old is not None:
                await _quietly_unload(old)


async def _quietly_unload(runtime: LooplineRuntime) -> None:
    try:
        await runtime.unload()
    except Exception:  # an unload failure must not take the server down
        log.exception("unloading %s failed", runtime.name)
