"""The operator's work queue: one reconcile per key at a time, changes before the periodic pass,
bursts folded, failures retried after a backoff."""

from __future__ import annotations

import threading
from typing import Any

from loopline.operators.cache import ObjectCache
from loopline.operators.handlers import _enqueue
from loopline.operators.workqueue import Key, Priority, Retry, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _key(name: str) -> Key:
    return ("models", "plant", name)


def _queue(clock: Clock | None = None) -> WorkQueue:
    return WorkQueue(lambda key: None, 1, lambda n: 2.0 * (n + 1), clock=clock or Clock())


def test_a_changed_object_goes_before_the_periodic_pass_of_all_others() -> None:
    q = _queue()
    for i in range(500):
        q.add(_key(f"m{i}"), Priority.RESYNC)
    q.add(_key("edited"), Priority.EVENT)
    assert q.get(timeout=0) == _key("edited")
    assert q.get(timeout=0) == _key("m0")  # the rest in the order they came


def test_a_burst_of_events_for_one_key_is_one_reconcile_and_raising_priority_moves_it() -> None:
    q = _queue()
    q.add(_key("a"), Priority.RESYNC)
    q.add(_key("b"), Priority.RESYNC)
    for _ in range(10):
        q.add(_key("b"), Priority.EVENT)
    assert q.depth() == 2
    assert q.get(timeout=0) == _key("b")
    assert q.get(timeout=0) == _key("a")
    assert q.get(timeout=0) is None


def test_a_key_re_added_while_reconciled_runs_again_afterwards_never_twice_at_once() -> None:
    q = _queue()
    q.add(_key("a"))
    assert q.get(timeout=0) == _key("a")
    q.add(_key("a"), Priority.RESYNC)  # changed again meanwhile
    assert q.get(timeout=0) is None  # not handed to a second worker
    q.done(_key("a"))
    assert q.get(timeout=0) == _key("a")


def test_a_failure_comes_back_after_its_backoff_and_resyncs_do_not_cut_it_short() -> None:
    clock = Clock()
    q = _queue(clock)
    q.add(_key("a"))
    assert q.get(timeout=0) == _key("a")
    q.done(_key("a"), failed=True)  # backoff 2 s
    q.add(_key("a"), Priority.RESYNC)  # the timer ticks: still backing off
    assert q.get(timeout=0) is None
    clock.now = 2.0
    assert q.get(timeout=0) == _key("a")
    q.done(_key("a"), failed=True)  # second failure: 4 s
    clock.now = 5.0
    assert q.get(timeout=0) is None
    q.add(_key("a"), Priority.EVENT)  # someone changed it: at once
    assert q.get(timeout=0) == _key("a")
    q.done(_key("a"))  # success resets the count


def test_workers_reconcile_every_key_once_and_retry_on_retry() -> None:
    seen: list[Key] = []
    lock = threading.Lock()
    all_done = threading.Event()
    failed_once: set[Key] = set()

    def handler(key: Key) -> None:
        with lock:
            if key == _key("flaky") and key not in failed_once:
                failed_once.add(key)
                raise Retry("backend down")
            seen.append(key)
            if len(seen) == 21:
                all_done.set()

    q = WorkQueue(handler, 4, lambda n: 0.01)
    q.start()
    try:
        for i in range(20):
            q.add(_key(f"m{i}"), Priority.RESYNC)
        q.add(_key("flaky"))
        assert all_done.wait(10)
    finally:
        q.stop(5)
    assert sorted(seen) == sorted([_key(f"m{i}") for i in range(20)] + [_key("flaky")])


class _Operator:
    def __init__(self, rv: str) -> None:
        self.rv = rv
        self.cache = ObjectCache()

    def wrote(self, key: Key, resource_version: str | None) -> bool:
        return resource_version == self.rv


def test_the_operators_own_status_write_coming_back_is_not_queued() -> None:
    q = _queue()
    memo: dict[str, Any] = {"operator": _Operator("42"), "queue": q}
    body = {"metadata": {"namespace": "plant", "name": "a", "resourceVersion": "42"}}
    _enqueue("models", "MODIFIED", body, memo, Priority.EVENT)
    assert q.depth() == 0
    _enqueue("models", None, body, memo, Priority.RESYNC)  # the timer always queues
    other = {"metadata": {"namespace": "plant", "name": "b", "resourceVersion": "43"}}
    _enqueue("models", "MODIFIED", other, memo, Priority.EVENT)
    _enqueue("models", "DELETED", other, memo, Priority.EVENT)
    assert q.depth() == 2
    # every body seen feeds the cache, and a deletion leaves it
    assert memo["operator"].cache.get("models", "plant", "a") == body
    assert memo["operator"].cache.get("models", "plant", "b") is None
