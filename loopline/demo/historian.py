"""The plant's historian: an asynchronous producer next to the line's synchronous traffic.

A historian collects readings and forwards them in bursts; it must not lose a burst when the
model servers are busy or restarting, so it uses asynchronous inference (docs/serving.md):
each request is queued under its own id (`202 Accepted`) and the answer fetched by id later.
It names itself in `Loopline-Caller`, so the servers' usage metrics count it apart from the
line's gateway.

It forwards the readings the line sent (the latest `burst` requests' rows), with the machine
keys prefixed: the server keeps each machine's alarm window in arrival order, and the same
reading arriving a second time, seconds later, would move the line's own alarm state. The
first request of each burst is sent twice, as a producer that retries after a timeout does:
the server accepts the repeat under the same id and answers it once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque

import pandas as pd

from loopline.data.schema import ENTITY
from loopline.demo.clients import AsyncRestClient, InferError
from loopline.demo.record import AsyncSample, DemoRecord

log = logging.getLogger(__name__)

CALLER = "historian"
ENTITY_PREFIX = "historian:"
POLL_S = 0.25


class Historian:
    """Send bursts of the line's recent readings through the async path, and fetch answers."""

    def __init__(
        self,
        client: AsyncRestClient,
        record: DemoRecord,
        *,
        burst: int = 20,
        every_s: float = 5.0,
        answer_timeout_s: float = 120.0,
    ) -> None:
        if burst < 1 or every_s <= 0:
            raise ValueError(f"burst must be >= 1 and every_s > 0, got {burst}, {every_s}")
        self.client = client
        self.record = record
        self.burst = burst
        self.every_s = every_s
        self.answer_timeout_s = answer_timeout_s
        self.resent = 0  # repeats of an id already accepted (each must be answered once)
        self._recent: deque[pd.DataFrame] = deque(maxlen=burst)
        self._pending: list[AsyncSample] = []
        self._prefix = f"{CALLER}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = ""  # why it stopped sending, when the server has no async route

    def feed(self, batch: pd.DataFrame) -> None:
        """A request the line sent: kept for the next burst (the latest `burst` of them)."""
        copy = batch.copy()
        copy[ENTITY] = ENTITY_PREFIX + copy[ENTITY].astype(str)
        with self._lock:
            self._recent.append(copy)

    def start(self) -> Historian:
        self._thread = threading.Thread(target=self._work, name="historian", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop sending bursts, fetch the answers still outstanding, close the client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.answer_timeout_s + 10)
        self._thread = None
        self.client.close()

    def _work(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.send_burst()
            except Exception:  # the demo keeps going; what failed is in the record
                log.exception("historian burst failed")
            if self.failed:
                return
            self.collect(deadline=time.monotonic() + self.every_s)
        self.collect(deadline=time.monotonic() + self.answer_timeout_s)

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}-{self._seq:06d}"

    def send_burst(self) -> int:
        """Queue the latest readings, one request per line request; returns how many."""
        with self._lock:
            batches = list(self._recent)
            self._recent.clear()
        sent = 0
        for i, batch in enumerate(batches):
            request_id = self._next_id()
            t = self.record.now()
            try:
                accepted = self.client.submit(batch, request_id)
                if i == 0:  # a producer's retry of the same id: accepted, queued once
                    self.client.submit(batch, request_id)
                    self.resent += 1
            except InferError as exc:
                if exc.status in ("404", "405"):
                    self.failed = f"the model server has no asynchronous inference ({exc})"
                    self.record.note(f"the historian sent nothing: {self.failed}")
                    return sent
                sample = AsyncSample(
                    t=t,
                    id=request_id,
                    caller=CALLER,
                    rows=len(batch),
                    status=f"refused {exc}"[:200],
                    segment=self.record.segment,
                )
                self.record.add_async(sample)
                continue
            sample = AsyncSample(
                t=t, id=accepted, caller=CALLER, rows=len(batch), segment=self.record.segment
            )
            self.record.add_async(sample)
            self._pending.append(sample)
            sent += 1
        return sent

    def collect(self, deadline: float) -> None:
        """Fetch answers of outstanding requests until all are in or `deadline` passes."""
        while self._pending:
            still: list[AsyncSample] = []
            for sample in self._pending:
                try:
                    answer = self.client.poll(sample.id)
                except InferError as exc:
                    self.record.answer_async(
                        sample,
                        answered_t=self.record.now(),
                        status=str(exc)[:200],
                        polls=sample.polls + 1,
                    )
                    continue
                if answer is None:
                    still.append(self.record.answer_async(sample, polls=sample.polls + 1))
                    continue
                self.record.answer_async(
                    sample,
                    ok=True,
                    answered_t=self.record.now(),
                    status="ok",
                    model_version=answer.model_version,
                    fallback_rows=answer.fallback_rows,
                    polls=sample.polls + 1,
                )
            self._pending = still
            if not still or time.monotonic() >= deadline:
                return
            time.sleep(POLL_S)

    @property
    def outstanding(self) -> int:
        return len(self._pending)
