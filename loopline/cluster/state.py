"""The state file of a local cluster: what runs, with which pid, on which ports.

`up`, `down` and `status` may run in different processes (a shell, pytest, the demo), so
the only source of truth is `state.json` in the state directory plus the kernel's process
table. Its processes are `loopline.supervisor` records, and the supervisor's rule decides
which are still ours: a recorded pid counts only while its create time and command line
still match, since after a reboot or a `kill -9` the pid may belong to someone else, even to
a second copy of the same command, and neither `down` nor `up` (which adopts live processes)
may mistake a stranger for ours.

State files written before the cluster used the supervisor recorded the start time as clock
ticks after boot plus the boot id; `load` converts those (see `_upgrade_record`), so a
cluster started by an older version is still found, adopted and stopped.
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

import psutil
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.supervisor import ProcessRecord, alive

__all__ = [
    "ClusterState",
    "Health",
    "ProcessRecord",
    "health",
    "is_alive",
    "load",
    "locked",
    "save",
]

# The supervisor's rule, under the name the cluster's callers know.
is_alive = alive


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

    @field_validator("processes", mode="before")
    @classmethod
    def _upgrade_records(cls, value: object) -> object:
        if isinstance(value, list):
            return [_upgrade_record(item) if isinstance(item, dict) else item for item in value]
        return value

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


def _upgrade_record(record: dict[str, object]) -> dict[str, object]:
    """A process record of an older state file (`start_ticks`: clock ticks after boot at
    which it started, `boot_id`: the boot) in the supervisor's form (`create_time`: seconds
    since the epoch), which is how psutil derives the create time from the same ticks.

    A record of another boot, or one without a start time (the oldest files), cannot be
    told apart from a recycled pid: it gets create time 0, which matches no process, so it
    counts as dead (the cluster is stale) and nothing is ever signalled on its word."""
    if "create_time" in record:
        return record
    upgraded = {k: v for k, v in record.items() if k not in ("start_ticks", "boot_id")}
    ticks = record.get("start_ticks")
    create_time = 0.0
    if isinstance(ticks, int) and record.get("boot_id") == _boot_id():
        create_time = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    upgraded["create_time"] = create_time
    return upgraded


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def health(state: ClusterState | None) -> Health:
    if state is None:
        return Health.STOPPED
    if state.processes and all(alive(p) for p in state.processes):
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
