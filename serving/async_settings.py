"""Settings of asynchronous inference (`LOOPLINE_ASYNC_*`), read once when a server starts.

They live apart from `ServingSettings` because they belong to the server process, not to a
loaded model: the REST routes and the worker exist before the model loads, and a hot reload
of the model must not reconnect them. An empty `redis_url` (the default) turns the whole
feature off: no routes, no worker, no connection.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AsyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPLINE_ASYNC_", extra="forbid")

    redis_url: str = Field(
        default="",
        description="Redis holding the request streams, e.g. redis://127.0.0.1:6379/0; "
        "empty disables asynchronous inference.",
    )
    prefix: str = Field(
        default="loopline:async", min_length=1, description="Prefix of every key it uses."
    )
    result_ttl_s: int = Field(
        default=3600, ge=1, description="Seconds a result (and an accepted id) is kept."
    )
    claim_idle_s: float = Field(
        default=30.0,
        gt=0.0,
        description="A request delivered to a worker and not answered for this long is "
        "reclaimed by another (XAUTOCLAIM): the worker is taken for dead.",
    )
    batch_size: int = Field(default=16, ge=1, description="Entries one worker read takes.")
    block_ms: int = Field(
        default=1000, ge=1, description="How long one read waits for new entries (ms)."
    )
    result_stream: bool = Field(
        default=False, description="Also publish each answer to the result stream."
    )
    result_stream_maxlen: int = Field(
        default=100_000, ge=1, description="Approximate length the result stream is cut to."
    )
    local: bool = Field(
        default=False,
        description="Local mode: when redis_url is empty, start a redis-server on loopback "
        "for the local model servers (off by default: nothing changes without it).",
    )
    consumer: str = Field(
        default="",
        description="This worker's consumer name in the group; empty means <hostname>-<pid>.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)

    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"
