"""The worker loop a model server runs beside its REST and gRPC listeners when
asynchronous inference is on: read the model's request stream as one consumer of the group,
score each request through `LooplineRuntime.score_inputs` (the synchronous path: canary
split, fallback routing, payload sampling and usage metrics apply, under protocol `async`),
store the answer, and now and then reclaim entries a dead worker left pending.

It reads only while the model is loaded, so a server that is still loading (or whose reload
failed with nothing loaded) leaves requests to the others; what it took and did not answer
is reclaimed after `claim_idle_s` by whichever worker runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref

from mlserver.errors import MLServerError
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from loopline.serving.async_messages import (
    AsyncMessageError,
    AsyncRequest,
    StoredResult,
    check_id,
    decode_request,
    error_result,
)
from loopline.serving.async_store import AsyncStore, Entry
from loopline.serving.runtime import LooplineRuntime
from loopline.serving.runtime_slot import RuntimeSlot
from loopline.serving.scoring import output_columns
from loopline.serving.v2_rest import WireError, encode_infer_response, parse_infer_body

log = logging.getLogger(__name__)

PROTOCOL = "async"
STATS_EVERY_S = 1.0
PRUNE_AFTER_CLAIMS = 10  # a consumer idle this many claim_idle_s with nothing held is gone


class AsyncMetrics:
    """Back-pressure of the request stream, as the worker last measured it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "loopline_async_queue_depth",
            "Asynchronous requests not answered yet (waiting or being scored).",
            ["model"],
            registry=registry,
        )
        self.pending = Gauge(
            "loopline_async_pending",
            "Asynchronous requests delivered to a worker and not answered yet.",
            ["model"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "loopline_async_oldest_age_seconds",
            "Age of the oldest asynchronous request not answered yet (0 when none waits).",
            ["model"],
            registry=registry,
        )
        self.messages = Counter(
            "loopline_async_messages_total",
            "Request stream entries a worker handled, by outcome: answered, duplicate (a "
            "result existed, nothing scored or stored), malformed (no usable id).",
            ["model", "outcome"],
            registry=registry,
        )
        self.reclaimed = Counter(
            "loopline_async_reclaimed_total",
            "Entries taken over from a worker that held them longer than claim_idle_s.",
            ["model"],
            registry=registry,
        )


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, AsyncMetrics] = (
    weakref.WeakKeyDictionary()
)


def async_metrics(registry: CollectorRegistry | None = None) -> AsyncMetrics:
    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = AsyncMetrics(registry)
        return found


def score_request(runtime: LooplineRuntime, request: AsyncRequest) -> StoredResult:
    """The answer a synchronous `POST .../infer` with this body would get, as a result."""
    try:
        parsed = parse_infer_body(request.body, None)
        parsed.outputs.check([o.name for o in runtime.outputs or ()])
        request_id = parsed.request.id or request.id
        answer = runtime.score_inputs(
            parsed.request.inputs, PROTOCOL, request.caller, request.subject
        )
        columns = output_columns(answer.scored, answer.task, answer.version)
        body, json_size = encode_infer_response(
            runtime.name, answer.version, request_id, columns, parsed.outputs
        )
    except WireError as exc:
        runtime.refused(PROTOCOL, exc, caller=request.caller, subject=request.subject)
        return error_result(exc.status_code, str(exc))
    except MLServerError as exc:  # counted and logged by the runtime
        return error_result(exc.status_code, str(exc))
    except Exception as exc:  # counted by the runtime; stored so the poller learns of it
        log.exception("async request %s failed", request.id)
        return error_result(500, f"internal error: {type(exc).__name__}: {exc}")
    if json_size is not None:
        return error_result(422, "binary_data_output is not available for async results")
    return StoredResult(200, body)


def usable_id(fields: dict[bytes, bytes]) -> str | None:
    """The id of an entry that is otherwise unusable, when it has a valid one (its poller
    then gets the error as its result)."""
    try:
        return check_id((fields.get(b"id") or b"").decode(errors="replace"))
    except AsyncMessageError:
        return None


class AsyncWorker:
    """One consumer of the model's group; `run()` until `stop()`."""

    def __init__(
        self,
        slot: RuntimeSlot,
        store: AsyncStore,
        consumer: str,
        metrics: AsyncMetrics | None = None,
    ) -> None:
        self.slot = slot
        self.store = store
        self.consumer = consumer
        self.metrics = metrics or async_metrics()
        self._stopping = asyncio.Event()
        self._cursor: bytes | str = "0-0"
        self._next_claim = 0.0
        self._next_stats = 0.0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Until `stop()`: a Redis that is not up yet, restarts or lost the group (no
        persistence) is retried every second, so the server never needs a restart for it."""
        settings = self.store.settings
        grouped = False
        while not self._stopping.is_set():
            try:
                if not grouped:
                    await self.store.ensure_group()
                    grouped = True
                await self.step(settings.block_ms)
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                if "NOGROUP" in str(exc):
                    grouped = False
                log.warning("async worker %s: %s; retrying in 1 s", self.consumer, exc)
                await self._sleep(1.0)
            except Exception:  # a bug or a model that cannot score: keep serving the rest
                log.exception("async worker %s: step failed; retrying in 1 s", self.consumer)
                await self._sleep(1.0)

    async def step(self, block_ms: int) -> int:
        """Reclaim (when due) or read one batch, and answer it; the entries handled."""
        now = time.monotonic()
        if now >= self._next_stats:
            await self.publish_stats()
            self._next_stats = now + STATS_EVERY_S
        if not self.slot.ready:
            await self._sleep(0.2)
            return 0
        entries: list[Entry] = []
        if now >= self._next_claim:
            self._cursor, entries = await self.store.reclaim(self.consumer, self._cursor)
            if entries:
                self.metrics.reclaimed.labels(self.slot.name).inc(len(entries))
                log.info("async worker %s reclaimed %d entries", self.consumer, len(entries))
            if self._cursor in (b"0-0", "0-0"):  # a full round: forget consumers long gone
                idle = self.store.settings.claim_idle_s
                self._next_claim = now + idle / 2
                await self.store.prune_consumers(self.consumer, PRUNE_AFTER_CLAIMS * idle)
        if not entries:
            entries = await self.store.read(self.consumer, block_ms)
        await self.handle(entries)
        return len(entries)

    async def handle(self, entries: list[Entry]) -> None:
        model = self.slot.name
        requests: list[tuple[bytes, AsyncRequest]] = []
        unusable: list[bytes] = []
        for entry_id, fields in entries:
            try:
                requests.append((entry_id, decode_request(fields)))
            except AsyncMessageError as exc:
                log.warning("async entry %s refused: %s", entry_id.decode(), exc)
                request_id = usable_id(fields)
                if request_id is None:
                    unusable.append(entry_id)
                    continue
                await self.store.answer(entry_id, request_id, error_result(422, str(exc)))
                self.metrics.messages.labels(model, "answered").inc()
                continue
        done = await self.store.answered([r.id for _, r in requests])
        duplicates = [entry_id for (entry_id, _), seen in zip(requests, done, strict=True) if seen]
        await self.store.drop(unusable + duplicates)
        if unusable:
            self.metrics.messages.labels(model, "malformed").inc(len(unusable))
        for (entry_id, request), seen in zip(requests, done, strict=True):
            if seen:
                self.metrics.messages.labels(model, "duplicate").inc()
                continue
            result = score_request(self.slot.get(model), request)
            stored = await self.store.answer(entry_id, request.id, result)
            self.metrics.messages.labels(model, "answered" if stored else "duplicate").inc()

    async def publish_stats(self) -> None:
        stats = await self.store.stats()
        model = self.slot.name
        self.metrics.depth.labels(model).set(stats.depth)
        self.metrics.pending.labels(model).set(stats.pending)
        self.metrics.oldest_age.labels(model).set(stats.oldest_age_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
