"""Asynchronous inference in local mode: the environment a local model server gets.

With `LOOPLINE_ASYNC_LOCAL=true` and no `LOOPLINE_ASYNC_REDIS_URL`, the first local model
server started by this process starts a redis-server for all of them (in `<root>/.redis`,
adopted by the next operator like the servers themselves) and each server is pointed at it.
With a URL set, the servers inherit it from the environment and nothing is started; with
neither, asynchronous inference stays off and nothing changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from loopline.serving.async_redis_local import LocalRedis
from loopline.serving.async_settings import AsyncSettings

URL_ENV = "LOOPLINE_ASYNC_REDIS_URL"
FOLDER = ".redis"  # under the serving root

_lock = threading.Lock()
_started: dict[Path, str] = {}


def local_async_env(root: Path, settings: AsyncSettings | None = None) -> dict[str, str]:
    """Extra environment of a local model server under `root` (empty: nothing to add)."""
    settings = settings or AsyncSettings()
    if settings.redis_url or not settings.local:
        return {}
    folder = (root / FOLDER).resolve()
    with _lock:
        url = _started.get(folder)
        if url is None:
            url = _started[folder] = LocalRedis(folder).start()
    return {URL_ENV: url}
