"""Events posted beside the reconciles, not inside them: client-go's event recorder, smallest form.

A core/v1 Event is a record for people (`kubectl describe`), never the state the operator acts
on: the status and the history ledger are. Posted inside the reconcile, each Event was one more
round trip holding a Model's lock and a worker thread, to an API server that, when hundreds of
Models change at once, is the bottleneck. So the reconcile hands its Events to this recorder
and goes on; one thread posts them in the order they came.

- Identical Events (same object, type, reason and message) that are still waiting become one
  Event with a `count`, as client-go's correlator does, so a flapping backend does not post
  hundreds.
- The queue is bounded: when the API server cannot keep up, new Events are dropped and counted
  (logged), rather than the operator's memory growing without bound.
- `close` posts what is waiting (up to a deadline), so an operator that stops, or a test that
  reads the Events after stopping it, loses none that were queued.
- A post that fails (refused, or no answer) is logged and dropped: Events were always best
  effort.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopline.operators.builders.events import event_body
from loopline.operators.builders.model_plan import Event

log = logging.getLogger(__name__)

Post = Callable[[str, dict[str, Any]], Any]  # (namespace, Event body)
EventKey = tuple[str, str, str, str, str, str]  # namespace, name, uid, type, reason, message

MAX_WAITING = 2000
CLOSE_DEADLINE_S = 10.0


@dataclass
class _Waiting:
    body: dict[str, Any]
    count: int = 1


def _key(obj: dict[str, Any], event: Event) -> EventKey:
    meta = obj["metadata"]
    return (
        meta["namespace"],
        meta["name"],
        str(meta.get("uid") or ""),
        event.type,
        event.reason,
        event.message,
    )


class EventRecorder:
    """Queues Events and posts them from its own thread (started on the first Event)."""

    def __init__(self, post: Post, max_waiting: int = MAX_WAITING) -> None:
        self._post = post
        self._max = max_waiting
        self._waiting: OrderedDict[EventKey, _Waiting] = OrderedDict()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False
        self.dropped = 0
        self.posted = 0

    def record(self, obj: dict[str, Any], event: Event, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        key = _key(obj, event)
        with self._cond:
            if self._closed:
                log.warning("event %s on %s after close: not posted", event.reason, key[1])
                return
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.count += 1
                waiting.body["count"] = waiting.count
                waiting.body["lastTimestamp"] = now
                return
            if len(self._waiting) >= self._max:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("%d events dropped: the API server is not keeping up", self.dropped)
                return
            self._waiting[key] = _Waiting(event_body(obj, event, now))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="loopline-events", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _next(self) -> _Waiting | None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            _, waiting = self._waiting.popitem(last=False)
            self._busy = True
            return waiting

    def _run(self) -> None:
        while (waiting := self._next()) is not None:
            body = waiting.body
            try:
                self._post(body["metadata"]["namespace"], body)
                self.posted += 1
            except Exception as exc:  # any failure: a lost Event must not stop the recorder
                name = body["involvedObject"]["name"]
                log.warning("could not post event %s on %s: %s", body["reason"], name, exc)

    def flush(self, timeout: float = CLOSE_DEADLINE_S) -> bool:
        """Wait until every queued Event was posted (or refused); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return not self._waiting and not self._busy
                self._cond.wait(left)
        return True

    def close(self, timeout: float = CLOSE_DEADLINE_S) -> None:
        """Post what is waiting (up to `timeout`), then stop the thread."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        if not done:
            log.warning("%d events not posted before the operator stopped", left)
        if self._thread is not None:
            self._thread.join(timeout)
