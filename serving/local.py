"""The `local` serving backend: model server processes on loopback ports, supervised.

One model server process per Loopline Model, listening on three free 127.0.0.1 ports (REST, gRPC,
metrics), with its files in `<root>/<name>/`: `settings.json` (server), `models/<name>/
model-settings.json` (the Loopline runtime, its model URIs and canary weight) and
`server.log` (stdout and stderr of every incarnation). The manager waits for the model to be
ready, restarts a process that dies (backoff 1 s, 2 s, 4 s … 30 s) on the same ports, and
changes the served versions or the canary weight through the V2 model repository API
(`POST /v2/repository/models/{name}/load`), which swaps the model without a restart.

The process is the lean server or MLServer (`local_spec.resolved_server`): same files, same API.

A server outlives a manager that is killed (it runs in its own session). The next manager on
the same folder adopts it when it was started the same way (`server.json`: the process kind,
the resolved interpreter, its extra environment): same pid, same ports, so clients keep their
endpoint and no request fails while the operator restarts. Adopting is a hot reload of the
desired versions and canary weight, so what it serves is what the new manager asked for. A
leftover that runs other code (an upgraded install) or another kind of server is stopped and
started anew. `close()` still stops every server: a manager that shuts down cleanly takes its
servers with it.

The repository API of both hosts needs the Model's bearer token (`loopline.auth`): the
manager provisions it (`LocalModelSpec.token_file`, by default `<root>/<name>/auth-token`,
mode 0600), hands the process its path in `LOOPLINE_AUTH_TOKEN_FILE` (never on the command
line) and sends it with every reload. A token file that was deleted is a rotation: the next
`start`/`update` provisions a new one and restarts the server on the same ports, since a
running server keeps the token it started with.

The operator's `local` serving backend wraps this; `loopline serve` runs one by hand. The
API: `start(spec)`, `update(spec)`, `stop(name)`, `status(name)`, `endpoints(name)`, `close()`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loopline import auth, quiet, supervisor
from loopline.ports import free_port
from loopline.serving.local_spec import (
    HOST,
    Endpoints,
    LocalModelSpec,
    LocalServingError,
    ServerStatus,
    lean_command,
    mlserver_command,
    model_settings,
    resolved_server,
    server_command,
    server_identity,
    server_settings,
    token_path,
)
from loopline.serving.quiet_probes import quiet_readiness_polls
from loopline.supervisor import SupervisorError, log_tail
from loopline.wait import WaitTimeout, wait_for
from loopline.watching import State, Supervisor, Watched

log = logging.getLogger(__name__)

PID_FILE = "server.pid"  # the running process's record (pid, create time, command line)
IDENTITY_FILE = "server.json"  # how the running process was started: what adoption compares
# SIGTERM to SIGKILL: a clean stop took 11 s on a loaded 2-core machine (measured).
STOP_GRACE_S = 30.0

# The spec and the files' contents are in local_spec; they are part of this module's API.
__all__ = [
    "PID_FILE",
    "Endpoints",
    "LocalModelSpec",
    "LocalServingError",
    "LocalServingManager",
    "ServerStatus",
    "free_port",
    "lean_command",
    "mlserver_command",
    "model_settings",
    "resolved_server",
    "server_identity",
    "server_settings",
]


def request_reload(rest: str, name: str, token: str | None, timeout_s: float) -> None:
    """Ask the server at `rest` to load `name` again from its model-settings (new versions,
    canary weight): the one authenticated call every hot reload goes through."""
    url = f"{rest}/v2/repository/models/{name}/load"
    try:
        response = httpx.post(
            url, headers=auth.bearer_headers(token), timeout=timeout_s, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise LocalServingError(f"{name}: reload request failed: {exc}") from exc
    if response.status_code != 200:
        raise LocalServingError(
            f"{name}: reload failed ({response.status_code}): {response.text[:500]}"
        )


@dataclass
class _Server:
    spec: LocalModelSpec
    folder: Path
    ports: tuple[int, int, int]
    watched: Watched
    host: str = ""  # the resolved server of the running process
    token: str | None = None  # what the running process checks and the manager sends

    @property
    def pid(self) -> int | None:
        record = self.watched.record
        return record.pid if record is not None else None

    def alive(self) -> bool:
        return self.watched.alive()

    @property
    def endpoints(self) -> Endpoints:
        rest, grpc, metrics = self.ports
        return Endpoints(
            rest=f"http://{HOST}:{rest}",
            grpc=f"{HOST}:{grpc}",
            metrics=f"http://{HOST}:{metrics}/metrics",
        )

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"


class LocalServingManager:
    """Starts, supervises, updates and stops local model server processes."""

    def __init__(
        self,
        root: Path,
        *,
        ready_timeout_s: float = 120.0,
        poll_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.ready_timeout_s = ready_timeout_s
        self._servers: dict[str, _Server] = {}
        self._lock = threading.RLock()
        self._http = httpx.Client(timeout=5.0, trust_env=False)
        quiet_readiness_polls()  # the probes below, without a log line each
        # Probes readiness, restarts dead servers with backoff, logs errors with the name.
        self._supervisor = Supervisor(
            poll_s=poll_s,
            initial_backoff_s=1.0,
            max_backoff_s=max_backoff_s,
            lock=self._lock,
            name="loopline-serving-supervisor",
        ).run()

    # -- public API -------------------------------------------------------------------------

    def start(self, spec: LocalModelSpec, *, wait: bool = True) -> ServerStatus:
        """Start a server for `spec` (idempotent for a running one: then it is an update)."""
        with self._lock:
            if spec.name in self._servers:
                return self.update(spec, wait=wait)
            folder = self.root / spec.name
            adopted = self._adopt(folder, spec)
            if adopted is not None:
                self._servers[spec.name] = adopted
                self._supervisor.watch(adopted.watched)
        if adopted is not None:
            # Always a reload: the files on disk may not be what the process loaded (its
            # manager may have died between writing them and asking for the reload).
            return self.update(spec, wait=wait)
        with self._lock:
            supervisor.reap_orphan(folder / PID_FILE, STOP_GRACE_S, what="model server")
            models = folder / "models"
            if models.exists():
                shutil.rmtree(models)
            (models / spec.name).mkdir(parents=True)
            server = self._server(spec, folder, (free_port(), free_port(), free_port()))
            self._write_files(server)
            self._servers[spec.name] = server
            self._supervisor.watch(server.watched)
        if wait:
            self.wait_ready(spec.name)
        return self.status(spec.name)

    def update(self, spec: LocalModelSpec, *, wait: bool = True) -> ServerStatus:
        """Serve new versions or a new canary weight: a hot model reload, same ports."""
        with self._lock:
            server = self._get(spec.name)
            server.spec = spec
            self._write_files(server)
            alive = server.alive()
            token = self._token(server)
            if alive and (server.host != resolved_server(spec) or server.token != token):
                # Another kind of server (batching turned on or off), or a rotated token the
                # running process does not know: a restart, same ports.
                self._supervisor.restart(server.watched, STOP_GRACE_S)
                alive = False
        if alive:
            request_reload(server.endpoints.rest, spec.name, server.token, self.ready_timeout_s)
        if wait:
            self.wait_ready(spec.name)
        return self.status(spec.name)

    def stop(self, name: str, timeout_s: float = STOP_GRACE_S) -> None:
        """Stop the server and forget it (its folder and log stay for inspection)."""
        with self._lock:
            server = self._servers.pop(name, None)
            if server is None:
                return
        self._supervisor.release(name, timeout_s)
        (server.folder / PID_FILE).unlink(missing_ok=True)

    def status(self, name: str) -> ServerStatus:
        with self._lock:
            server = self._get(name)
            return ServerStatus(
                name=name,
                state=str(server.watched.state),
                pid=server.pid,
                restarts=server.watched.restarts,
                endpoints=server.endpoints,
                log_path=server.log_path,
                last_error=server.watched.last_error,
            )

    def endpoints(self, name: str) -> Endpoints:
        return self._get(name).endpoints

    def token_file(self, name: str) -> Path:
        """Where the token of `name`'s server is (what its repository API callers send)."""
        server = self._get(name)
        return token_path(server.spec, server.folder)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._servers)

    def wait_ready(self, name: str, timeout_s: float | None = None) -> ServerStatus:
        """Block until the model answers ready, or raise with the log's tail."""
        timeout = timeout_s or self.ready_timeout_s

        def ready() -> ServerStatus | None:
            with self._lock:
                server = self._get(name)
                watched = server.watched
                record = watched.record
            if server.alive():
                if self._ready(server):
                    self._supervisor.mark_ready(watched)
                    return self.status(name)
                return None
            if record is not None and not watched.adopted and watched.restarts == 0:
                # Our own first incarnation died before it was ever ready: a broken spec or
                # install, which a restart would not mend.
                how = supervisor.exit_message(record)
                with self._lock:
                    watched.state = State.FAILED
                    watched.last_error = f"{how} before ready"
                raise LocalServingError(
                    f"{name}: model server {how} before it was ready; log {server.log_path}:\n"
                    f"{log_tail(server.log_path, 40)}"
                )
            return None

        try:
            return wait_for(ready, timeout=timeout, interval=0.1, what=f"model {name} ready")
        except WaitTimeout:
            log_path = self._get(name).log_path
            raise LocalServingError(
                f"{name}: not ready after {timeout:.0f} s; log {log_path}:\n"
                f"{log_tail(log_path, 40)}"
            ) from None

    def close(self) -> None:
        """Stop every server and the supervisor."""
        self._supervisor.halt()
        for name in self.names():
            self.stop(name)
        self._http.close()

    def __enter__(self) -> LocalServingManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _get(self, name: str) -> _Server:
        server = self._servers.get(name)
        if server is None:
            raise LocalServingError(f"no local server named {name!r}; running: {self.names()}")
        return server

    def _server(
        self,
        spec: LocalModelSpec,
        folder: Path,
        ports: tuple[int, int, int],
        record: supervisor.ProcessRecord | None = None,
    ) -> _Server:
        """A server wired to the supervisor: how to start it again, how to probe it."""
        watched = Watched(
            name=spec.name,
            spawn=lambda: self._spawn(server),
            probe=lambda: self._not_ready(server),
            record=record,
        )
        server = _Server(spec=spec, folder=folder, ports=ports, watched=watched)
        return server

    def _token(self, server: _Server) -> str:
        """The Model's token, provisioned when missing (first start, or deleted to rotate)."""
        return auth.ensure_token_file(token_path(server.spec, server.folder))

    def _identity(self, spec: LocalModelSpec, folder: Path) -> dict[str, Any]:
        """`server_identity` plus a digest of the token: a server started with another
        token (rotated since) is not adopted but restarted. Only the digest is written."""
        token = auth.ensure_token_file(token_path(spec, folder))
        return {**server_identity(spec), "token_sha256": auth.fingerprint(token)}

    def _write_files(self, server: _Server) -> None:
        server.folder.mkdir(parents=True, exist_ok=True)
        (server.folder / "settings.json").write_text(
            json.dumps(server_settings(*server.ports), indent=2) + "\n"
        )
        target = server.folder / "models" / server.spec.name / "model-settings.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(model_settings(server.spec), indent=2) + "\n")
        tmp.replace(target)

    def _adopt(self, folder: Path, spec: LocalModelSpec) -> _Server | None:
        """The server a previous manager left running for `folder`, if it runs what `spec`
        needs (see the module docstring); None when there is nothing to adopt."""
        record = supervisor.adopt(folder / PID_FILE)
        if record is None:
            return None
        identity = _read_json(folder / IDENTITY_FILE)
        settings = _read_json(folder / "settings.json")
        if identity != self._identity(spec, folder) or not isinstance(settings, dict):
            return None
        try:
            ports = (
                int(settings["http_port"]),
                int(settings["grpc_port"]),
                int(settings["metrics_port"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        server = self._server(spec, folder, ports, record)
        server.host = resolved_server(spec)
        server.token = self._token(server)
        if self._ready(server):  # else the supervisor marks it once it is
            server.watched.state = State.READY
        log.info(
            "adopted model server %s (pid %s) left running for %s", spec.name, record.pid, folder
        )
        return server

    def _spawn(self, server: _Server) -> supervisor.ProcessRecord:
        """Start the server's process (first start or restart: same ports, same files)."""
        quiet.apply()  # telemetry and progress bars off in the child too
        env = dict(os.environ)
        env.update(server.spec.extra_env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop(auth.TOKEN_ENV, None)
        server.token = self._token(server)
        env[auth.TOKEN_FILE_ENV] = str(token_path(server.spec, server.folder))
        try:
            record = supervisor.start(
                server.spec.name,
                server_command(server.spec, server.folder),
                log_file=server.log_path,
                env=env,
                cwd=server.folder,
                state_file=server.folder / PID_FILE,
            )
        except SupervisorError as exc:
            raise LocalServingError(f"{server.spec.name}: {exc}") from exc
        server.host = resolved_server(server.spec)
        (server.folder / IDENTITY_FILE).write_text(
            json.dumps(self._identity(server.spec, server.folder), indent=2) + "\n"
        )
        log.info("started %s model server %s (pid %s)", server.host, server.spec.name, record.pid)
        return record

    def _ready(self, server: _Server) -> bool:
        return not self._not_ready(server)

    def _not_ready(self, server: _Server) -> str:
        """Why the model does not answer ready ("" when it does): the process may be alive
        and its server up while the model itself is unloaded (an `unload` call), so the
        model's own ready endpoint is what counts. Its runtime holds the canary too and is
        ready only when both versions are loaded."""
        rest = server.endpoints.rest
        name = server.spec.name
        try:
            live = self._http.get(f"{rest}/v2/health/ready")
            model = self._http.get(f"{rest}/v2/models/{name}/ready")
        except httpx.HTTPError as exc:
            return f"model {name} on {rest} does not answer ({type(exc).__name__}: {exc})"
        if model.status_code != 200:
            return f"model {name} on {rest} is not ready (HTTP {model.status_code})"
        if live.status_code != 200:
            return f"model server on {rest} is not ready (HTTP {live.status_code})"
        return ""

    def recover(self, name: str) -> str:
        """Bring back a model that stopped answering ready while its process lives: reload it
        (the same hot reload as `update`), or restart the process when the reload fails.
        Returns what was done, for the caller's log and status."""
        with self._lock:
            server = self._get(name)
            spec = server.spec
        try:
            self.update(spec, wait=False)
        except LocalServingError as exc:
            log.warning("model server %s: reload failed (%s); restarting it", name, exc)
            self._supervisor.restart(
                server.watched, STOP_GRACE_S, reason=f"reload failed ({exc}); restarted"
            )
            return f"reload failed ({exc}); restarted the model server"
        why = self._not_ready(server)
        with self._lock:
            if why:
                server.watched.last_error = f"{why} after a reload"
                return f"reloaded, still not ready: {why}"
            server.watched.state = State.READY
            server.watched.last_error = ""
        log.info("model server %s: model reloaded and ready again", name)
        return "reloaded"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
