"""The state file of a local cluster: what runs, with which pid, on which ports.

`up`, `down` and `status` may run in different processes (a shell, pytest, the demo), so
the only source of truth is `state.json` in the state directory plus the kernel's process
table. A recorded pid counts as ours only while its command line still matches what we
started: after a reboot or a `kill -9` the pid may belong to someone else, and `down` must
never signal a stranger.
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


class ClusterState(BaseModel):
    """Everything `status`, `down` and the test fixture need to find a running cluster."""

    model_config = ConfigDict(extra="forbid")

    kubernetes_version: str
    server: str
    ports: dict[str, int]
    nodes: int
    bin_dir: Path
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


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (after the parenthesised comm)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded process runs and is still the program we started.

    Zombies count as dead: they hold a pid but no longer run (their parent, perhaps a
    short-lived `loopline cluster up`, may simply not have reaped them yet).
    """
    if Path("/proc").is_dir():
        state = _proc_state(record.pid)
        if state is None or state in ("Z", "X"):
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
