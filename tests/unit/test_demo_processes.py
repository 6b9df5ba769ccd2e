"""Process hygiene of the demo: real child processes, started, found and stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from loopline.demo.processes import DEMO_ID_ENV, DemoProcesses, tagged_pids


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
