"""The Redis side of asynchronous inference: submit, poll, read, reclaim, answer, measure.

The two writes that must not be split are Lua scripts, which Redis runs atomically: a
submission checks that the id is new and appends it to the request stream in one step, and
an answer stores the result (only if none is stored yet), publishes it, acknowledges and
deletes the entry in one step. So a worker that dies mid-batch leaves its entries pending
(another reclaims them after `claim_idle_s`), and a request scored twice (a duplicate, or a
reclaim racing a slow worker) is stored and published once: the first answer wins.

Answered entries are deleted, so the stream's length is the queue depth, and its first
entry the oldest request not yet answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from loopline.serving.async_messages import (
    AsyncRequest,
    StoredResult,
    StreamKeys,
    id_age_seconds,
)
from loopline.serving.async_settings import AsyncSettings

# ARGV: the TTL, then the entry's fields as name, value pairs (`AsyncRequest.fields`).
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 2))
return 1
"""

_ANSWER = """
local stored = redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3])
if stored and ARGV[5] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*',
             'id', ARGV[6], 'status', ARGV[7], 'body', ARGV[8])
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if stored then return 1 end
return 0
"""

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True)
class QueueStats:
    depth: int  # requests not answered yet (delivered or not)
    pending: int  # delivered to a worker, not answered
    oldest_age_s: float  # age of the oldest request not answered (0 when empty)


class AsyncStore:
    """One model's streams and results on one Redis connection pool."""

    def __init__(self, settings: AsyncSettings, model: str) -> None:
        self.settings = settings
        self.keys = StreamKeys(settings.prefix, model)
        self.client: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url)
        self._submit = self.client.register_script(_SUBMIT)
        self._answer = self.client.register_script(_ANSWER)

    async def close(self) -> None:
        await self.client.aclose()

    async def ensure_group(self) -> None:
        """The consumer group, created at the stream's start if missing (idempotent)."""
        try:
            await self.client.xgroup_create(self.keys.requests, self.keys.group, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, request: AsyncRequest) -> bool:
        """Append `request` unless its id was accepted or answered already (then False)."""
        added = await self._submit(
            keys=[
                self.keys.result(request.id),
                self.keys.accepted(request.id),
                self.keys.requests,
            ],
            args=[
                self.settings.result_ttl_s,
                *(part for pair in request.fields().items() for part in pair),
            ],
        )
        return bool(added)

    async def result(self, request_id: str) -> StoredResult | None:
        raw = await self.client.get(self.keys.result(request_id))
        return None if raw is None else StoredResult.decode(raw)

    async def known(self, request_id: str) -> bool:
        """Whether the id was accepted (or answered) and not expired."""
        found = await self.client.exists(
            self.keys.accepted(request_id), self.keys.result(request_id)
        )
        return bool(found)

    async def answered(self, ids: list[str]) -> list[bool]:
        """For each id, whether a result is stored already (one round trip)."""
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.exists(self.keys.result(request_id))
            found = await pipe.execute()
        return [bool(n) for n in found]

    async def read(self, consumer: str, block_ms: int | None = None) -> list[Entry]:
        """New entries for `consumer` (waits up to `block_ms` when there are none)."""
        got = await self.client.xreadgroup(
            self.keys.group,
            consumer,
            {self.keys.requests: ">"},
            count=self.settings.batch_size,
            block=block_ms,
        )
        return [(entry_id, fields) for _, entries in got or [] for entry_id, fields in entries]

    async def reclaim(self, consumer: str, cursor: bytes | str) -> tuple[bytes | str, list[Entry]]:
        """Entries idle for `claim_idle_s` under any consumer (a dead worker's), now owned by
        `consumer`; and the cursor of the next scan ("0-0" once it went round)."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        reply: Any = await self.client.xautoclaim(
            self.keys.requests,
            self.keys.group,
            consumer,
            min_idle_time=idle_ms,
            start_id=cursor,
            count=self.settings.batch_size,
        )
        # XAUTOCLAIM answers [next cursor, entries, deleted ids]; an entry deleted meanwhile
        # (answered by another worker) comes back without fields.
        entries = [(e[0], e[1]) for e in reply[1] if e and e[1] is not None]
        return reply[0], entries

    async def prune_consumers(self, keep: str, min_idle_s: float) -> list[str]:
        """Remove consumers that hold nothing and did nothing for `min_idle_s` (workers that
        died or were replaced: each restart joins under a new name). Harmless for a live
        one: its next read joins the group again."""
        removed = []
        for consumer in await self.client.xinfo_consumers(self.keys.requests, self.keys.group):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name == keep or consumer["pending"] or consumer["idle"] < min_idle_s * 1000:
                continue
            await self.client.xgroup_delconsumer(self.keys.requests, self.keys.group, name)
            removed.append(name)
        return removed

    async def answer(self, entry_id: bytes, request_id: str, result: StoredResult) -> bool:
        """Store, publish (if configured), acknowledge and delete; False when the id had a
        result already (this answer was a duplicate and is dropped)."""
        stored = await self._answer(
            keys=[self.keys.result(request_id), self.keys.requests, self.keys.results],
            args=[
                self.keys.group,
                entry_id,
                self.settings.result_ttl_s,
                result.encode(),
                "1" if self.settings.result_stream else "0",
                request_id,
                result.status,
                result.body,
                self.settings.result_stream_maxlen,
            ],
        )
        return bool(stored)

    async def drop(self, entry_ids: list[bytes]) -> None:
        """Acknowledge and delete entries answered already or unusable."""
        if not entry_ids:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.requests, self.keys.group, *entry_ids)
            pipe.xdel(self.keys.requests, *entry_ids)
            await pipe.execute()

    async def stats(self) -> QueueStats:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.requests)
            pipe.xrange(self.keys.requests, "-", "+", count=1)
            pipe.xpending(self.keys.requests, self.keys.group)
            depth, first, pending = await pipe.execute()
        age = id_age_seconds(first[0][0], time.time()) if first else 0.0
        return QueueStats(depth=int(depth), pending=int(pending["pending"]), oldest_age_s=age)
