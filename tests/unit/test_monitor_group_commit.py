"""Windows tested together are written together, and a crash before that write loses nothing a
restart cannot recompute: their rows are still in the file, queued."""

from __future__ import annotations

from pathlib import Path

from loopline.monitoring.decision import RetrainRequest
from loopline.monitoring.state import StateStore
from tests.unit.test_monitor_service import Clock, batch, frame, monitor


class Recording:
    """Checks that the decision of every request it receives is already on disk."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.requests: list[RetrainRequest] = []

    def request(self, request: RetrainRequest) -> None:
        snap = self.store.load()
        assert snap is not None
        assert snap.meta["decision"]["pending_request"]["request_id"] == request.request_id
        self.requests.append(request)


def test_one_write_for_the_windows_one_process_call_tests(tmp_path: Path) -> None:
    clock = Clock()
    mon = monitor(tmp_path, Recording(StateStore(tmp_path / "state")), clock, persist_seconds=60)
    writes: list[int] = []
    save = mon.store.save
    mon.store.save = lambda *a, **k: (writes.append(1), save(*a, **k))[1]  # type: ignore[method-assign]
    mon.submit(batch(frame(700, 1)))  # a window of 200, then one every 100 rows: 6 windows
    assert mon.process() == 6
    assert len(writes) == 1
    snap = mon.store.load()
    assert snap is not None
    assert snap.meta["decision"]["windows_tested"] == 6
    assert snap.queue.shape[0] == 0


def test_a_request_is_on_disk_before_it_is_sent(tmp_path: Path) -> None:
    clock = Clock()
    requester = Recording(StateStore(tmp_path / "state"))
    mon = monitor(tmp_path, requester, clock, persist_seconds=60)
    mon.submit(batch(frame(200, 2)))
    mon.process()
    mon.submit(batch(frame(600, 3, shift=1.5)))  # drifted windows in one drained batch
    mon.process()
    assert len(requester.requests) == 1


def test_crash_before_the_write_recomputes_the_same_decisions(tmp_path: Path) -> None:
    clock = Clock()
    first = monitor(tmp_path, Recording(StateStore(tmp_path / "state")), clock, persist_seconds=60)
    first.submit(batch(frame(200, 4)))
    first.process()
    first.submit(batch(frame(400, 5, shift=1.5)))
    first.persist()  # the periodic write: these rows are queued, not yet tested
    saved = first.store.path.read_bytes()
    first.process()
    after_crash = (first.state.windows_tested, first.state.consecutive, first.state.decision)
    first.store.path.write_bytes(saved)  # the process died before its write
    again = monitor(tmp_path, Recording(StateStore(tmp_path / "state")), clock, persist_seconds=60)
    again.process()
    assert (
        again.state.windows_tested,
        again.state.consecutive,
        again.state.decision,
    ) == after_crash
