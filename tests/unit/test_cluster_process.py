"""Starting and stopping process groups, readiness waits and ports (real processes)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from loopline.cluster import process as proc
from loopline.cluster import state as st
from loopline.cluster.errors import ComponentStartError, PortInUseError
from loopline.cluster.state import is_alive
from tests.fixtures.cluster import wait_for


def _pids_in_group(pgid: int) -> list[int]:
    return proc.live_group_members(pgid)


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    # A parent that spawns a grandchild and ignores SIGTERM: stop() must escalate.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    record = proc.start("stubborn", [sys.executable, "-c", script], tmp_path / "x.log")
    proc.wait_until(
        record, lambda: "started" in (tmp_path / "x.log").read_text(), timeout=10, what="up"
    )
    # The grandchild was spawned (Popen returns after its exec) before "started" was printed.
    assert len(_pids_in_group(record.pid)) == 2
    started = time.monotonic()
    proc.stop(record, timeout=1)
    assert time.monotonic() - started < 8
    assert not is_alive(record)
    assert _pids_in_group(record.pid) == []


def test_stop_survives_an_already_dead_process(tmp_path: Path) -> None:
    record = proc.start("quick", [sys.executable, "-c", "pass"], tmp_path / "q.log")
    wait_for(lambda: proc.exited(record), timeout=10, what="the process to exit")
    proc.stop(record)
    assert not is_alive(record)


def test_wait_until_reports_exit_with_log_tail(tmp_path: Path) -> None:
    script = "import sys; print('line one'); print('fatal: bad flag', file=sys.stderr); sys.exit(2)"
    record = proc.start("broken", [sys.executable, "-c", script], tmp_path / "b.log")
    with pytest.raises(ComponentStartError, match="broken exited during start") as info:
        proc.wait_until(record, lambda: False, timeout=10, what="ready")
    assert "fatal: bad flag" in str(info.value)
    assert info.value.log == tmp_path / "b.log"


def test_wait_until_times_out_with_log_tail(tmp_path: Path) -> None:
    script = "print('still starting', flush=True); import time; time.sleep(30)"
    record = proc.start("slow", [sys.executable, "-c", script], tmp_path / "s.log")
    try:
        with pytest.raises(ComponentStartError, match="did not become ready within 1s"):
            proc.wait_until(record, lambda: False, timeout=1, what="ready")
    finally:
        proc.stop(record)


def test_address_in_use_in_a_log_becomes_port_error(tmp_path: Path) -> None:
    script = "print('listen tcp 127.0.0.1:1: bind: address already in use'); raise SystemExit(1)"
    record = proc.start("etcd", [sys.executable, "-c", script], tmp_path / "e.log")
    with pytest.raises(PortInUseError, match="address already in use"):
        proc.wait_until(record, lambda: False, timeout=10, what="ready")


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = proc.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        proc.ensure_port_free(port, "test")


def test_taken_port_is_reported() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} \\(kube-apiserver\\)"):
            proc.ensure_port_free(port, "kube-apiserver")


def test_a_port_left_in_time_wait_by_a_killed_server_is_free() -> None:
    """Recovery restarts a killed apiserver on its old port; the connections it had are in
    TIME_WAIT on that port, which the Go binary's bind ignores, so the check must too."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end enters TIME_WAIT
    client.close()
    listener.close()
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # the TIME_WAIT is real: a plain bind fails
    proc.ensure_port_free(port, "kube-apiserver")
    with socket.socket() as other:  # a listener on it is taken, SO_REUSEADDR or not
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(PortInUseError):
            proc.ensure_port_free(port, "kube-apiserver")


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "l.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert proc.log_tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert proc.log_tail(tmp_path / "missing.log") == ""


def test_start_records_the_create_time_of_the_child(tmp_path: Path) -> None:
    record = proc.start(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "l"
    )
    try:
        assert record.create_time == psutil.Process(record.pid).create_time()
        assert st.is_alive(record)
    finally:
        proc.stop(record)
    assert not st.is_alive(record)


def test_a_process_that_cannot_be_started_is_a_component_error(tmp_path: Path) -> None:
    with pytest.raises(ComponentStartError, match="missing-binary could not be started"):
        proc.start("missing-binary", [str(tmp_path / "no-such-binary")], tmp_path / "m.log")
