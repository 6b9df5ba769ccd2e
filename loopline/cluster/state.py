"""The state file of a local cluster: what runs, with which pid, on which ports.

`up`, `down` and `status` may run in different processes (a shell, pytest, the demo), so
the only source of truth is `state.json` in the state directory plus the kernel's process
table. A recorded pid counts as ours only while its command line and its start time (and the
boot it started in) still match what we recorded: after a reboot or a `kill -9` the pid may
belong to someone else, even to a second copy of the same command, and neither `down` nor
`up` (which adopts live processes) may mistake a stranger for ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ProcessRecord(BaseModel):
    """One started process; it leads its own process group (pgid == pid)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    pid: int
    argv: list[str]
    log: Path
    # Clock ticks after boot at which the process started (/proc/<pid>/stat field 22) and
    # the kernel's boot id: with the pid they name one process for good. None in state
    # files written before they were recorded (then the command line alone decides).
    start_ticks: int | None = None
    boot_id: str | None = None


class ClusterState(BaseModel):
    """Everything `status`, `down` and the test fixture need to find a running cluster."""

    model_config = ConfigDict(extra="forbid")

    kubernetes_version: str
    server: str
    ports: dict[str, int]
    nodes: int
    bin_dir: Path
    # "kwok" (fake nodes, nothing runs) or "containerd" (a real node: see cluster.node);
    # recorded so `status` and `down` know what to look at and tear down.
    runtime: str = "kwok"
    node_ip: str | None = None  # the containerd node's InternalIP
    kubeconfig: Path
    processes: list[ProcessRecord] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def process(self, name: str) -> ProcessRecord:
        for record in self.processes:
            if record.name == name:
                return record
        raise KeyError(name)


class Health(StrEnum):
    """What the state directory says about a cluster."""

    STOPPED = "stopped"  # no state file
    RUNNING = "running"  # every recorded process alive
    STALE = "stale"  # a state file whose processes (some or all) are gone


def load(path: Path) -> ClusterState | None:
    """The recorded state, or None when there is none (or it is unreadable garbage)."""
    try:
        return ClusterState.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        # A half-written file from a killed `up`: treat as stale, not as a crash.
        return None


def save(path: Path, state: ClusterState) -> None:
    """Write atomically so a concurrent reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _proc_stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the parenthesised comm: [state, ppid, pgrp, ...]."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (field 22 of /proc/<pid>/stat)."""
    fields = _proc_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded process runs and is still the one we started: same command
    line, and (when recorded) same start time in the same boot.

    Zombies count as dead: they hold a pid but no longer run (their parent, perhaps a
    short-lived `loopline cluster up`, may simply not have reaped them yet).
    """
    if Path("/proc").is_dir():
        fields = _proc_stat_fields(record.pid)
        if not fields or fields[0] in ("Z", "X"):
            return False
        if record.boot_id is not None and record.boot_id != boot_id():
            return False
        if record.start_ticks is not None and (
            len(fields) < 20 or int(fields[19]) != record.start_ticks
        ):
            return False
        cmdline = _proc_cmdline(record.pid)
        # Empty for an instant right after exec (and for kernel threads, which ignore
        # signals anyway): not evidence of a different program.
        return not cmdline or cmdline == record.argv
    try:  # no procfs (macOS): best effort
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def health(state: ClusterState | None) -> Health:
    if state is None:
        return Health.STOPPED
    if state.processes and all(is_alive(p) for p in state.processes):
        return Health.RUNNING
    return Health.STALE


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Serialise `up`/`down` on one state directory across processes."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
