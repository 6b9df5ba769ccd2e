"""Start, watch and stop the control-plane processes, by the supervisor's rules.

Each component runs in its own session (so its own process group): it survives the
`loopline cluster up` that started it, ignores the terminal's SIGHUP, and `down` can stop
it together with anything it spawned by signalling the group. What counts as alive, how a
process is started and stopped, is `loopline.supervisor`'s; this module adds the cluster's
own errors (ComponentStartError, PortInUseError) and its port checks.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from loopline import supervisor
from loopline.cluster.errors import ClusterError, ComponentStartError, PortInUseError
from loopline.supervisor import ProcessRecord, SupervisorError, log_tail

__all__ = [
    "ensure_port_free",
    "exited",
    "free_ports",
    "live_group_members",
    "log_tail",
    "port_is_free",
    "start",
    "stop",
    "wait_until",
]


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
    try:
        return supervisor.start(name, argv, log_file=log, env=env)
    except SupervisorError as exc:
        raise ComponentStartError(name, f"could not be started ({exc})", log, "") from exc


def exited(record: ProcessRecord) -> bool:
    return not supervisor.alive(record)


def live_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group."""
    return sorted(process.pid for process in supervisor.group_members(pgid))


def stop(record: ProcessRecord, timeout: float = 20.0) -> None:
    """Stop a component and its process group: SIGTERM, up to `timeout` seconds, then
    SIGKILL (see `supervisor.stop`: a pid the kernel recycled is never signalled)."""
    try:
        supervisor.stop(record, grace=timeout)
    except SupervisorError as exc:
        raise ClusterError(str(exc)) from exc


def wait_until(
    record: ProcessRecord,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> None:
    """Poll `ready` until it holds; fail fast, with the log tail, if the process exits."""
    try:
        supervisor.wait_until(record, ready, timeout=timeout, what=what, interval=interval)
    except SupervisorError as exc:
        tail = log_tail(record.log)
        if supervisor.alive(record):
            reason = f"did not become {what} within {timeout:.0f}s"
            raise ComponentStartError(record.name, reason, record.log, tail) from exc
        if "address already in use" in tail:
            raise PortInUseError(
                f"{record.name} could not bind its port (address already in use); "
                f"last lines of {record.log}:\n{tail}"
            ) from exc
        raise ComponentStartError(record.name, "exited during start", record.log, tail) from exc
