"""The state file and the liveness rules `status`/`down` rely on (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loopline import supervisor
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


def _record(name: str, pid: int, argv: list[str], log: Path) -> st.ProcessRecord:
    """A record of the running process `pid`, with its real create time."""
    return st.ProcessRecord(
        name=name, pid=pid, create_time=psutil.Process(pid).create_time(), argv=argv, log=log
    )


def test_save_load_round_trip_and_garbage_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert st.load(path) is None
    record = st.ProcessRecord(name="etcd", pid=1, create_time=12.5, argv=["etcd"], log=tmp_path)
    state = _state([record], tmp_path)
    st.save(path, state)
    assert st.load(path) == state
    path.write_text('{"half": ')
    assert st.load(path) is None


def test_alive_only_while_the_command_line_matches(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    ours = _record("x", sleeper.pid, SLEEP, tmp_path)
    recycled = ours.model_copy(update={"argv": ["kube-apiserver"]})
    assert st.is_alive(ours)
    assert not st.is_alive(recycled)


def test_zombie_counts_as_dead(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    record = _record("x", sleeper.pid, SLEEP, tmp_path)
    os.kill(sleeper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while st.is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Not reaped yet: the kernel still has the pid, but it no longer runs.
    assert Path(f"/proc/{sleeper.pid}").exists()
    assert not st.is_alive(record)


def test_health(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    alive = _record("a", sleeper.pid, SLEEP, tmp_path)
    dead = alive.model_copy(update={"name": "b", "argv": ["gone"]})
    assert st.health(None) is st.Health.STOPPED
    assert st.health(_state([alive], tmp_path)) is st.Health.RUNNING
    assert st.health(_state([alive, dead], tmp_path)) is st.Health.STALE
    assert st.health(_state([], tmp_path)) is st.Health.STALE


def test_same_pid_and_command_line_but_another_create_time_is_not_ours(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """A pid recycled by a second copy of the same command must not be adopted."""
    ours = _record("x", sleeper.pid, SLEEP, tmp_path)
    assert st.is_alive(ours)
    assert not st.is_alive(ours.model_copy(update={"create_time": ours.create_time - 1}))


def _old_state_file(path: Path, records: list[dict[str, object]], tmp_path: Path) -> None:
    """A state file as versions before the supervisor wrote it: start ticks and boot id."""
    state = _state([], tmp_path).model_dump(mode="json")
    state["processes"] = records
    path.write_text(json.dumps(state))


def test_an_old_state_file_of_a_running_cluster_is_still_ours(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Its start ticks in this boot become the create time: the cluster is RUNNING, and
    `down` can stop what it recorded."""
    fields = Path(f"/proc/{sleeper.pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[19])
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    old = {"name": "etcd", "pid": sleeper.pid, "argv": SLEEP, "log": str(tmp_path / "etcd.log")}
    path = tmp_path / "state.json"
    _old_state_file(path, [{**old, "start_ticks": ticks, "boot_id": boot}], tmp_path)
    state = st.load(path)
    assert state is not None
    assert st.health(state) is st.Health.RUNNING
    record = state.process("etcd")
    assert record.create_time == pytest.approx(psutil.Process(sleeper.pid).create_time(), abs=0.05)
    assert supervisor.stop(record, grace=5)
    assert sleeper.wait(timeout=5) is not None


def test_an_old_state_file_from_another_boot_or_without_ticks_is_stale_and_never_signalled(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Neither can be told from a recycled pid: the state loads (so `up` sees a stale
    cluster rather than none) but its processes count as dead and `stop` leaves them be."""
    fields = Path(f"/proc/{sleeper.pid}/stat").read_text().rpartition(")")[2].split()
    old = {"pid": sleeper.pid, "argv": SLEEP, "log": str(tmp_path / "x.log")}
    path = tmp_path / "state.json"
    records: list[dict[str, object]] = [
        {**old, "name": "other-boot", "start_ticks": int(fields[19]), "boot_id": "another"},
        {**old, "name": "oldest"},
        {**old, "name": "no-ticks", "start_ticks": None, "boot_id": None},
    ]
    _old_state_file(path, records, tmp_path)
    state = st.load(path)
    assert state is not None
    assert st.health(state) is st.Health.STALE
    for record in state.processes:
        assert not st.is_alive(record), record.name
        assert not supervisor.stop(record, grace=1)
    assert sleeper.poll() is None, "a process not proven ours was signalled"
    st.save(path, state)  # written back in the new form
    assert "start_ticks" not in path.read_text()
    assert st.load(path) == state
