"""Process hygiene of the demo: real child processes, started, found and stopped."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopline import supervisor
from loopline.demo.processes import DEMO_ID_ENV, DemoProcesses, tagged_pids
from loopline.serving.async_local import FOLDER, local_async_env
from loopline.serving.async_redis_local import STATE_FILE
from loopline.serving.async_settings import AsyncSettings


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_recorded_process_and_its_detached_grandchild_are_stopped(tmp_path: Path) -> None:
    procs = DemoProcesses(tmp_path / "state")
    # A parent that starts a grandchild in a session of its own (as a model server launcher
    # would), so signalling the parent's process group alone would miss it.
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    record = procs.start("parent", [sys.executable, "-c", script])
    assert _wait(lambda: len(tagged_pids(procs.demo_id)) == 2), "grandchild did not start"
    assert record.pid in procs.leftovers()
    assert len(procs.leftovers()) == 2

    # A second handle (as `loopline demo down` in another process) finds it from the file.
    again = DemoProcesses(tmp_path / "state")
    assert again.demo_id == procs.demo_id
    stopped = again.stop_all(timeout=5)
    assert "parent" in stopped
    assert _wait(lambda: not again.leftovers()), f"left behind: {again.leftovers()}"
    assert again.load() is not None
    assert again.load().processes == []  # type: ignore[union-attr]
    assert (tmp_path / "state" / "logs" / "parent.log").exists()


def test_other_demos_and_untagged_processes_are_left_alone(tmp_path: Path) -> None:
    mine = DemoProcesses(tmp_path / "a")
    theirs = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env={DEMO_ID_ENV: "someone-else", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert _wait(lambda: tagged_pids("someone-else") == [theirs.pid])
        assert mine.stop_all(timeout=2) == []
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()


def test_the_local_async_broker_keeps_the_demo_id_and_is_stopped_with_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-server writes its process title over its environment unless told not to; the
    broker the operator's local serving backend starts must keep the demo id it inherits, or
    it outlives the demo. Started here as the operator starts it, inside a demo's
    environment."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (scripts/install-system-deps.sh installs it)")
    procs = DemoProcesses(tmp_path / "state")
    monkeypatch.setenv(DEMO_ID_ENV, procs.demo_id)
    root = tmp_path / "state" / "operator" / "serving"
    assert local_async_env(root, AsyncSettings(local=True))
    record = supervisor.adopt(root / FOLDER / STATE_FILE)
    assert record is not None
    try:
        assert tagged_pids(procs.demo_id) == [record.pid]
        assert procs.leftovers() == [record.pid]
        assert f"pid {record.pid}" in procs.stop_all(timeout=5)
        assert _wait(lambda: not supervisor.alive(record))
        assert procs.leftovers() == []
    finally:
        supervisor.stop(record)
