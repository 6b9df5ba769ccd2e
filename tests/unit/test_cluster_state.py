"""The state file and the liveness rules `status`/`down` rely on (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.cluster import state as st

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _state(records: list[st.ProcessRecord], tmp_path: Path) -> st.ClusterState:
    return st.ClusterState(
        kubernetes_version="v1.34.4",
        server="https://127.0.0.1:1",
        ports={"kube-apiserver": 1},
        nodes=0,
        bin_dir=tmp_path,
        kubeconfig=tmp_path / "kubeconfig",
        processes=records,
    )


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(SLEEP)
    yield proc
    proc.kill()
    proc.wait()


def test_save_load_round_trip_and_garbage_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert st.load(path) is None
    state = _state([st.ProcessRecord(name="etcd", pid=1, argv=["etcd"], log=tmp_path)], tmp_path)
    st.save(path, state)
    assert st.load(path) == state
    path.write_text('{"half": ')
    assert st.load(path) is None


def test_alive_only_while_the_command_line_matches(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    ours = st.ProcessRecord(name="x", pid=sleeper.pid, argv=SLEEP, log=tmp_path)
    recycled = st.ProcessRecord(name="x", pid=sleeper.pid, argv=["kube-apiserver"], log=tmp_path)
    assert st.is_alive(ours)
    assert not st.is_alive(recycled)


def test_zombie_counts_as_dead(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    record = st.ProcessRecord(name="x", pid=sleeper.pid, argv=SLEEP, log=tmp_path)
    os.kill(sleeper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while st.is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Not reaped yet: the kernel still has the pid, but it no longer runs.
    assert Path(f"/proc/{sleeper.pid}").exists()
    assert not st.is_alive(record)


def test_health(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    alive = st.ProcessRecord(name="a", pid=sleeper.pid, argv=SLEEP, log=tmp_path)
    dead = st.ProcessRecord(name="b", pid=sleeper.pid, argv=["gone"], log=tmp_path)
    assert st.health(None) is st.Health.STOPPED
    assert st.health(_state([alive], tmp_path)) is st.Health.RUNNING
    assert st.health(_state([alive, dead], tmp_path)) is st.Health.STALE
    assert st.health(_state([], tmp_path)) is st.Health.STALE


def test_same_pid_and_command_line_but_another_start_time_is_not_ours(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """A pid recycled by a second copy of the same command must not be adopted."""
    ticks = st.start_ticks(sleeper.pid)
    assert ticks is not None
    ours = st.ProcessRecord(
        name="x", pid=sleeper.pid, argv=SLEEP, log=tmp_path, start_ticks=ticks, boot_id=st.boot_id()
    )
    assert st.is_alive(ours)
    assert not st.is_alive(ours.model_copy(update={"start_ticks": ticks - 1}))
    assert not st.is_alive(ours.model_copy(update={"boot_id": "another-boot"}))
    # A state file from before start times were recorded still works (command line only).
    assert st.is_alive(ours.model_copy(update={"start_ticks": None, "boot_id": None}))
