"""Monitoring backends: the per-Model drift monitor (`loopline.monitoring`).

`LocalMonitoringBackend` runs `loopline monitor serve` as one process per Model on a free
loopback port, configured through `LOOPLINE_MONITOR_*` variables from the Model's
`spec.monitoring`; the model server samples traffic to it, and it writes retraining requests
back onto the Model as annotations. A monitor that exits is started again on the next
reconcile; a changed spec restarts it; one that a killed operator left running is stopped
before a new one starts (its record, `monitor.pid` in its folder, names the process by pid,
create time and command line, so a reused pid is never signalled).

Each monitor checks the Model's bearer token on its sample and reference APIs
(`loopline.auth`): the backend provisions the token file (`tokens_dir/<ns>/<name>.token`,
mode 0600, the same file the Model's model server reads), passes its path in
`LOOPLINE_AUTH_TOKEN_FILE` and sends the token on its own reference reloads. A deleted token
file is a rotation: the next `apply` provisions a new token and restarts the monitor.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import ValidationError

from loopline import auth, supervisor
from loopline.operators.builders.monitoring import DriftCheck, MonitorDesired, monitor_settings
from loopline.operators.errors import BackendUnavailable
from loopline.ports import free_port
from loopline.types.monitor import MonitorStatus

log = logging.getLogger(__name__)

PID_FILE = "monitor.pid"  # the running monitor's record (pid, create time, command line)


class MonitoringBackend(Protocol):
    def apply(self, desired: MonitorDesired) -> str:
        """Make the monitor run as desired; return its base URL."""
        ...

    def check(self, namespace: str, name: str) -> DriftCheck | None:
        """The monitor's last tested window, or None (never raises: it is informational)."""
        ...

    def reload_reference(self, namespace: str, name: str) -> None:
        """Ask the monitor to load the champion's reference now (best effort: it also polls)."""
        ...

    def delete(self, namespace: str, name: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Monitor:
    desired: MonitorDesired
    port: int
    record: supervisor.ProcessRecord
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return supervisor.alive(self.record)


def drift_check_of(doc: object) -> DriftCheck | None:
    """The monitor's `/v1/status` as the Model reconciler reads it; None before its first
    tested window, or for a document it cannot read (checks are informational)."""
    try:
        status = MonitorStatus.model_validate(doc)
        if not status.last_window_end:
            return None
        return DriftCheck(
            last_check=datetime.fromisoformat(status.last_window_end),
            features=list(status.last_drifted),
            p_values=dict(status.last_p_values),
            confirmed=status.drift_confirmed,
            settled=status.stable_consecutive >= max(1, status.consecutive_required),
        )
    except (ValidationError, ValueError):
        log.warning("unreadable drift monitor status: %.300s", doc)
        return None


class LocalMonitoringBackend:
    def __init__(
        self,
        root: Path,
        *,
        tracking_uri: str,
        kubeconfig: Path | None,
        tokens_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.tracking_uri = tracking_uri
        self.kubeconfig = kubeconfig
        self.tokens_dir = tokens_dir or root / ".tokens"
        self._monitors: dict[str, _Monitor] = {}
        self._lock = threading.Lock()

    def _env(self, desired: MonitorDesired, port: int) -> dict[str, str]:
        settings = monitor_settings(
            desired,
            host="127.0.0.1",
            port=port,
            kubeconfig=str(self.kubeconfig or ""),
            tracking_uri=self.tracking_uri,
            state_dir=str(self.root / desired.namespace / desired.name),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_MONITOR_")}
        env.update(settings)
        env.pop(auth.TOKEN_ENV, None)
        env[auth.TOKEN_FILE_ENV] = str(self.token_file(desired.namespace, desired.name))
        return env

    def token_file(self, namespace: str, name: str) -> Path:
        """The Model's token file, shared with its model server."""
        return auth.model_token_path(self.tokens_dir, namespace, name)

    def apply(self, desired: MonitorDesired) -> str:
        with self._lock:
            current = self._monitors.get(desired.key)
            try:
                token = auth.ensure_token_file(self.token_file(desired.namespace, desired.name))
            except (OSError, auth.AuthConfigError) as exc:
                raise BackendUnavailable(f"local monitoring: {exc}") from exc
            if current is not None and current.alive():
                if current.desired == desired and current.token == token:
                    return current.url
                _stop(current.record)
            port = current.port if current is not None else free_port()
            folder = self.root / desired.namespace / desired.name
            if current is None:
                # A monitor a killed operator left running would keep its port and memory and
                # share the state folder with the new one.
                _stop_orphan(folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                record = supervisor.start(
                    f"drift monitor {desired.key}",
                    [sys.executable, "-m", "loopline.cli.main", "monitor", "serve",
                     "--model", desired.name, "--namespace", desired.namespace,
                     "--port", str(port), "--state-dir", str(folder)],
                    log_file=folder / "monitor.log",
                    env=self._env(desired, port),
                    state_file=folder / PID_FILE,
                )  # fmt: skip
            except (OSError, supervisor.SupervisorError) as exc:
                raise BackendUnavailable(
                    f"local monitoring cannot start in {folder}: {exc}"
                ) from exc
            monitor = _Monitor(desired, port, record, token)
            self._monitors[desired.key] = monitor
            log.info("started drift monitor for %s on port %d", desired.key, port)
            return monitor.url

    def reload_reference(self, namespace: str, name: str) -> None:
        with self._lock:
            monitor = self._monitors.get(f"{namespace}/{name}")
        if monitor is None or not monitor.alive():
            return  # a monitor that starts later loads the alias as it starts
        try:
            response = httpx.post(
                f"{monitor.url}/v1/reference",
                headers=auth.bearer_headers(monitor.token),
                timeout=5.0,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            log.warning("monitor of %s/%s did not reload its reference: %s", namespace, name, exc)
            return
        if response.status_code >= 400:
            log.warning(
                "monitor of %s/%s did not reload its reference (%d): %s",
                namespace,
                name,
                response.status_code,
                response.text[:300],
            )

    def check(self, namespace: str, name: str) -> DriftCheck | None:
        with self._lock:
            monitor = self._monitors.get(f"{namespace}/{name}")
        if monitor is None or not monitor.alive():
            return None
        try:
            doc = httpx.get(f"{monitor.url}/v1/status", timeout=1.0, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None
        return drift_check_of(doc)

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            monitor = self._monitors.pop(f"{namespace}/{name}", None)
        folder = self.root / namespace / name
        if monitor is not None:
            _stop(monitor.record)
            (folder / PID_FILE).unlink(missing_ok=True)
        else:
            _stop_orphan(folder)  # deleted while no operator ran

    def close(self) -> None:
        with self._lock:
            monitors = list(self._monitors.values())
            self._monitors.clear()
        for monitor in monitors:
            _stop(monitor.record)
            folder = self.root / monitor.desired.namespace / monitor.desired.name
            (folder / PID_FILE).unlink(missing_ok=True)


def _stop(record: supervisor.ProcessRecord) -> None:
    try:
        supervisor.stop(record, grace=10.0)
    except supervisor.SupervisorError as exc:
        raise BackendUnavailable(str(exc)) from exc


def _stop_orphan(folder: Path) -> None:
    try:
        supervisor.reap_orphan(folder / PID_FILE, what="drift monitor")
    except supervisor.SupervisorError as exc:
        raise BackendUnavailable(str(exc)) from exc
