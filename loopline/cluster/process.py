"""Start, watch and stop the control-plane processes.

Each component runs in its own session (so its own process group): it survives the
`loopline cluster up` that started it, ignores the terminal's SIGHUP, and `down` can stop
it together with anything it spawned by signalling the group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from loopline.cluster.errors import ComponentStartError, PortInUseError
from loopline.cluster.state import ProcessRecord, boot_id, is_alive, start_ticks

# Processes started by this Python process, so we can reap them (a killed child stays a
# zombie until its parent waits for it).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, for error messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int) -> bool:
    try:
        ensure_port_free(port, "")
    except PortInUseError:
        return False
    return True


def ensure_port_free(port: int, what: str) -> None:
    """Fail early and clearly when a fixed port is taken, instead of in a component log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the Go components do: connections of a killed predecessor lingering in
        # TIME_WAIT do not make the port taken; a listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"127.0.0.1:{port} ({what}) is already in use by another process; "
                    "stop it, or choose another port (LOOPLINE_CLUSTER_APISERVER_PORT, "
                    "0 picks a free one)."
                ) from exc
            raise


def start(
    name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> ProcessRecord:
    """Start `argv` detached, appending its stdout and stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    # Popen returns after the exec, and exec keeps the start time: this is the child's.
    return ProcessRecord(
        name=name,
        pid=proc.pid,
        argv=argv,
        log=log,
        start_ticks=start_ticks(proc.pid),
        boot_id=boot_id(),
    )


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def exited(record: ProcessRecord) -> bool:
    _reap(record.pid)
    return not is_alive(record)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # Only zombies left? Those are dead for our purposes; reap ours.
    _reap(pgid)
    members = live_group_members(pgid)
    return members is not None and not members


def live_group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) members of a process group, or None without procfs."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop(record: ProcessRecord, timeout: float = 20.0) -> None:
    """Stop a component and its process group: SIGTERM, wait, then SIGKILL.

    Signals go only to a group whose leader is still the program we recorded, so a pid the
    kernel recycled after a crash is never hit.
    """
    try:
        _reap(record.pid)
        if not is_alive(record):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _group_gone(record.pid):
                return
            time.sleep(0.1)
        # The group id cannot be recycled while any member lives, so this hits only ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _group_gone(record.pid):
            time.sleep(0.05)
    finally:
        _wait_reaped(record.pid)


def _wait_reaped(pid: int) -> None:
    """Reap our child once it is dead, so no zombie outlives `down` in this process."""
    child = _CHILDREN.pop(pid, None)
    if child is None:
        return
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:  # still running: keep it for a later attempt
        _CHILDREN[pid] = child


def wait_until(
    record: ProcessRecord,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> None:
    """Poll `ready` until it holds; fail fast, with the log tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if exited(record):
            tail = log_tail(record.log)
            if "address already in use" in tail:
                raise PortInUseError(
                    f"{record.name} could not bind its port (address already in use); "
                    f"last lines of {record.log}:\n{tail}"
                )
            raise ComponentStartError(record.name, "exited during start", record.log, tail)
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ComponentStartError(
                record.name,
                f"did not become {what} within {timeout:.0f}s",
                record.log,
                log_tail(record.log),
            )
        time.sleep(interval)
