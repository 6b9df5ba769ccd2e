"""The operator's work queue: which object to reconcile next, worked by a fixed pool of threads.

kopf calls a handler per watch event and per timer tick; run directly, every call takes a
thread of its executor in arrival order, so with many Models the periodic resync of all of them
queues ahead of the one a person just changed (starvation), and one object's burst of events
becomes as many reconciles. The queue follows client-go's workqueue instead:

- a key (plural, namespace, name) is queued at most once: events that arrive while it waits
  fold into one reconcile, which reads the object fresh anyway;
- a key re-added while a worker reconciles it is reconciled again afterwards, never by two
  workers at once;
- a change someone made (`EVENT`) goes before the periodic resync (`RESYNC`), so a Model edited
  among 500 is reconciled next, not after the other 499;
- a key whose reconcile raised a retryable error comes back after a per-key backoff, and its
  failure count resets on the next success.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from enum import IntEnum

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # plural, namespace, name


class Priority(IntEnum):
    EVENT = 0  # a watch event: someone (or something) changed the object
    RESYNC = 1  # the periodic level-based pass


class Retry(Exception):
    """Raised by a handler to have its key reconciled again after the queue's backoff."""


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Key], None],
        workers: int,
        backoff: Callable[[int], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._backoff = backoff
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, Key]] = []
        self._queued: dict[Key, int] = {}  # key -> its priority in the heap
        self._processing: set[Key] = set()
        self._dirty: dict[Key, int] = {}  # re-added while processing
        self._delayed: list[tuple[float, int, Key]] = []
        self._failures: dict[Key, int] = {}
        self._backing_off: set[Key] = set()  # failed keys waiting out their backoff
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: Key, priority: Priority = Priority.EVENT) -> None:
        with self._cond:
            self._add(key, int(priority))

    def _add(self, key: Key, priority: int) -> None:
        if priority == Priority.RESYNC and key in self._backing_off:
            return  # a failing backend is not asked again before its backoff ends
        if key in self._processing:
            self._dirty[key] = min(priority, self._dirty.get(key, priority))
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= priority:
            return
        # A key raised to a higher priority is pushed again; the old entry is skipped.
        self._queued[key] = priority
        heapq.heappush(self._heap, (priority, next(self._seq), key))
        self._cond.notify()

    # -- reading --------------------------------------------------------------------------

    def depth(self) -> int:
        """Keys waiting (not counting those being reconciled or waiting out a backoff)."""
        with self._cond:
            return len(self._queued)

    def _promote_due(self) -> float | None:
        """Move delayed keys that are due into the queue; seconds until the next one."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._backing_off.discard(key)
            self._add(key, Priority.RESYNC)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float | None = None) -> Key | None:
        """The next key to reconcile (marked as processing), or None on stop or timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._stopping:
                wait = self._promote_due()
                while self._heap:
                    priority, _, key = heapq.heappop(self._heap)
                    if self._queued.get(key) != priority:
                        continue  # superseded by a push at a higher priority
                    del self._queued[key]
                    self._processing.add(key)
                    return key
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: Key, failed: bool = False) -> None:
        """The reconcile of `key` ended: back in the queue if re-added meanwhile, after the
        backoff if it failed."""
        with self._cond:
            self._processing.discard(key)
            if failed:
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                self._backing_off.add(key)
                heapq.heappush(
                    self._delayed, (self._clock() + self._backoff(count), next(self._seq), key)
                )
            else:
                self._failures.pop(key, None)
            dirty = self._dirty.pop(key, None)
            if dirty is not None:
                self._add(key, dirty)
            self._cond.notify()

    # -- workers --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            key = self.get()
            if key is None:
                return
            failed = False
            try:
                self._handler(key)
            except Retry:
                failed = True
            except Exception:  # a bug in one reconcile must not stop the worker
                log.exception("reconcile of %s/%s/%s failed", *key)
                failed = True
            finally:
                self.done(key, failed)

    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running reconciles finish (up to `timeout`), drop what is still queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = self._clock() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock()))
        self._threads.clear()
