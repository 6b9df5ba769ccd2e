"""Watching local processes (loopline.watching) on real child processes: a dead process is
restarted with a growing backoff, each failure is logged with the process's name, a failing
probe is reported and not repaired, and an error while watching one process does not stop
the watching of the others."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopline import supervisor
from loopline.supervisor import ProcessRecord
from loopline.wait import wait_for
from loopline.watching import State, Supervisor, Watched

SLEEP = "import time; time.sleep(120)"
CRASH = "import sys; print('boom: cannot load the model', flush=True); sys.exit(3)"


@pytest.fixture
def watcher() -> Iterator[Supervisor]:
    """A supervisor stepped by hand (`check`) unless a test calls `run`; closed after."""
    owner = Supervisor(poll_s=0.05, initial_backoff_s=0.05, max_backoff_s=0.4)
    yield owner
    owner.close(grace=1)


def _spawner(tmp_path: Path, name: str, script: str) -> Callable[[], ProcessRecord]:
    def spawn() -> ProcessRecord:
        return supervisor.start(
            name, [sys.executable, "-c", script], log_file=tmp_path / f"{name}.log"
        )

    return spawn


def _until_dead(watched: Watched) -> None:
    wait_for(lambda: not watched.alive(), timeout=30, what=f"{watched.name} to exit")


def test_a_dead_process_is_restarted_with_growing_backoff_and_each_failure_logged(
    watcher: Supervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loopline.watching")
    watched = watcher.watch(Watched(name="crasher", spawn=_spawner(tmp_path, "crasher", CRASH)))
    delays: list[float] = []
    pids: list[int] = []
    for _ in range(5):
        assert watched.record is not None
        pids.append(watched.record.pid)
        _until_dead(watched)
        watcher.check(watched)  # notices the death: logs it, schedules the restart
        assert watched.state is State.RESTARTING
        delays.append(watched.backoff_s)
        assert watched.last_error == "exited with code 3"
        restarts = watched.restarts
        wait_for(
            lambda: time.monotonic() >= watched.next_restart,
            timeout=5,
            what="the backoff to pass",
            interval=0.01,
        )
        watcher.check(watched)
        assert watched.restarts == restarts + 1
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.4]  # doubling, up to the ceiling
    assert len(set(pids)) == 5, "each restart is a new process"
    failures = [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]
    assert len(failures) == 5, "every death is logged, not only the first"
    for message in failures:
        assert message.startswith("crasher exited with code 3; restarting in")
        assert "boom: cannot load the model" in message  # the log's tail says why


def test_a_process_that_dies_is_restarted_by_the_running_loop(
    watcher: Supervisor, tmp_path: Path
) -> None:
    script = "import time; print('up', flush=True); time.sleep(0.3)"
    watched = watcher.watch(Watched(name="short", spawn=_spawner(tmp_path, "short", script)))
    watcher.run()
    wait_for(lambda: watched.restarts >= 2, timeout=60, what="two restarts")
    assert "up\n" in (tmp_path / "short.log").read_text()


def test_a_failing_probe_is_reported_with_the_name_not_restarted(
    watcher: Supervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loopline.watching")
    why = [""]
    watched = watcher.watch(
        Watched(name="server", spawn=_spawner(tmp_path, "server", SLEEP), probe=lambda: why[0])
    )
    assert watched.record is not None
    pid = watched.record.pid
    watcher.check(watched)
    assert watched.state is State.READY
    why[0] = "model server does not answer"
    watcher.check(watched)
    assert watched.state is State.UNREADY
    assert watched.last_error == "model server does not answer"
    assert "server: model server does not answer" in caplog.text
    watcher.check(watched)
    assert watched.record.pid == pid, "an unready process was restarted"
    assert watched.restarts == 0
    why[0] = ""
    watcher.check(watched)
    assert watched.state is State.READY
    assert watched.last_error == ""


def test_an_error_while_watching_is_logged_with_the_name_and_the_others_go_on(
    watcher: Supervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="loopline.watching")
    spawns = [0]
    first = _spawner(tmp_path, "flaky", "pass")

    def flaky() -> ProcessRecord:
        spawns[0] += 1
        if spawns[0] > 1:
            raise RuntimeError("port 8080 is taken")
        return first()

    probes = [0]

    def healthy() -> str:
        probes[0] += 1
        return ""

    watcher.watch(Watched(name="flaky", spawn=flaky))
    watcher.watch(Watched(name="steady", spawn=_spawner(tmp_path, "steady", SLEEP), probe=healthy))
    watcher.run()
    wait_for(
        lambda: any("supervising flaky failed" in r.getMessage() for r in caplog.records),
        timeout=30,
        what="the failed restart to be logged",
    )
    error = next(r for r in caplog.records if "supervising flaky failed" in r.getMessage())
    assert error.exc_info is not None
    assert "port 8080 is taken" in str(error.exc_info[1])
    seen = probes[0]
    wait_for(lambda: probes[0] > seen, timeout=30, what="the other process to be probed still")
    assert spawns[0] >= 2


def test_halt_leaves_processes_running_for_the_next_owner_to_adopt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed owner's processes outlive it; the next owner adopts, not starts a copy, and
    a death of an adopted process says that its exit code went to the previous owner."""
    state_file = tmp_path / "process.json"

    def spawn() -> ProcessRecord:
        return supervisor.start(
            "kept",
            [sys.executable, "-c", SLEEP],
            log_file=tmp_path / "kept.log",
            state_file=state_file,
        )

    first = Supervisor(poll_s=0.05, initial_backoff_s=0.05, max_backoff_s=0.4)
    record = first.watch(Watched(name="kept", spawn=spawn)).record
    assert record is not None
    first.run()
    first.halt()
    second = Supervisor(poll_s=0.05, initial_backoff_s=0.05, max_backoff_s=0.4)
    try:
        adopted = supervisor.adopt(state_file)
        assert adopted == record
        watched = second.watch(Watched(name="kept", spawn=spawn, record=adopted))
        assert watched.adopted
        assert watched.record == record
        # Killed behind the owner's back: the next check sees an adopted process die.
        assert supervisor.stop(record, grace=1)
        second.check(watched)
        assert watched.state is State.RESTARTING
        assert watched.last_error.startswith(f"adopted process {record.pid} exited")
    finally:
        second.close(grace=1)
        first.close(grace=1)


def test_release_stops_the_process(watcher: Supervisor, tmp_path: Path) -> None:
    watched = watcher.watch(Watched(name="gone", spawn=_spawner(tmp_path, "gone", SLEEP)))
    record = watched.record
    assert record is not None
    assert supervisor.alive(record)
    released = watcher.release("gone", grace=5)
    assert released is watched
    assert watched.state is State.STOPPED
    assert not supervisor.alive(record)
    assert watcher.get("gone") is None
