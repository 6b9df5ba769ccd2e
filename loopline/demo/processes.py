"""Everything the demo starts is written down, so Ctrl-C, `--keep` and `demo down` all work.

Two nets catch every process:
1. each process the demo starts itself runs in its own session and is recorded (pid, argv,
   log) in `<state>/processes.json`; stopping signals its whole process group;
2. every one of them also gets `LOOPLINE_DEMO_ID=<id>` in its environment, which their own
   children inherit (the operator's model servers, pipeline workers and monitors, even in
   sessions of their own), so a sweep of /proc finds what the groups missed.

`stop_all` uses both, and `leftovers` is what the e2e test asserts is empty.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field

from loopline import supervisor
from loopline.supervisor import ProcessRecord, SupervisorError

log = logging.getLogger(__name__)

DEMO_ID_ENV = "LOOPLINE_DEMO_ID"
PROCESSES_FILE = "processes.json"


class DemoState(BaseModel):
    """What `loopline demo down` needs to find a running demo."""

    model_config = ConfigDict(extra="forbid")

    demo_id: str
    processes: list[ProcessRecord] = Field(default_factory=list)
    cluster_state_dir: Path | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)
    stop_timeouts: dict[str, float] = Field(
        default_factory=dict, description="Seconds from SIGTERM to SIGKILL, by process name."
    )


def tagged_pids(demo_id: str) -> list[int]:
    """Pids of live processes whose environment carries this demo's id (never our own)."""
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["status"]):
        if process.pid == me or process.info["status"] in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        ):
            continue
        try:
            environ = process.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if environ.get(DEMO_ID_ENV) == demo_id:
            found.append(process.pid)
    return sorted(found)


class DemoProcesses:
    """The processes of one demo, recorded in `state_dir`."""

    def __init__(self, state_dir: Path, demo_id: str | None = None) -> None:
        self.state_dir = state_dir
        self.file = state_dir / PROCESSES_FILE
        existing = self.load()
        if existing is not None and demo_id is None:
            self.state = existing
        else:
            self.state = DemoState(demo_id=demo_id or uuid.uuid4().hex[:12])

    @property
    def demo_id(self) -> str:
        return self.state.demo_id

    def load(self) -> DemoState | None:
        try:
            return DemoState.model_validate_json(self.file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(self.file)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child: ours, the demo id, and `extra`."""
        env = dict(os.environ)
        env[DEMO_ID_ENV] = self.demo_id
        env.update(extra or {})
        return env

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float | None = None,
    ) -> ProcessRecord:
        """Start `argv` in its own session, logging to `<state>/logs/<name>.log`; record it.

        `stop_timeout` bounds the wait between SIGTERM and SIGKILL for a process known not
        to need a graceful shutdown (a UI), so stopping the demo stays quick."""
        record = supervisor.start(
            name, argv, log_file=self.state_dir / "logs" / f"{name}.log", env=self.env(env)
        )
        self.state.processes.append(record)
        if stop_timeout is not None:
            self.state.stop_timeouts[name] = stop_timeout
        self.save()
        log.info("started %s (pid %d)", name, record.pid)
        return record

    def set_cluster(self, state_dir: Path) -> None:
        self.state.cluster_state_dir = state_dir
        self.save()

    def set_endpoint(self, name: str, url: str) -> None:
        self.state.endpoints[name] = url
        self.save()

    def alive(self) -> list[ProcessRecord]:
        return [p for p in self.state.processes if supervisor.alive(p)]

    def leftovers(self) -> list[int]:
        """Live pids that belong to this demo: recorded ones and anything carrying its id."""
        recorded = [p.pid for p in self.alive()]
        return sorted(set(recorded) | set(tagged_pids(self.demo_id)))

    def stop_all(self, timeout: float = 20.0) -> list[str]:
        """Stop recorded processes (newest first, with their groups), the local cluster, then
        anything else still carrying the demo id. Returns the names stopped."""
        stopped = []
        for record in reversed(self.state.processes):
            if supervisor.alive(record):
                log.info("stopping %s (pid %d)", record.name, record.pid)
                stopped.append(record.name)
            try:
                supervisor.stop(record, self.state.stop_timeouts.get(record.name, timeout))
            except SupervisorError as exc:  # the sweep below tries again; the rest goes on
                log.error("could not stop %s: %s", record.name, exc)
        if self.state.cluster_state_dir is not None:
            from loopline.cluster.manager import LocalCluster
            from loopline.cluster.settings import ClusterSettings

            cluster = LocalCluster(ClusterSettings(state_dir=self.state.cluster_state_dir))
            if cluster.state() is not None:
                cluster.down()
                stopped.append("cluster")
        strays = tagged_pids(self.demo_id)
        if strays:
            log.info("stopping %d more process(es) started by the demo: %s", len(strays), strays)
            supervisor.stop_pids(strays, grace=10.0)
            stopped.extend(f"pid {p}" for p in strays)
        self.state.processes = []
        self.state.cluster_state_dir = None
        self.state.endpoints = {}
        self.state.stop_timeouts = {}
        self.save()
        return stopped
