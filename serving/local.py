"""The `local` serving backend: model server processes on loopback ports, supervised.

One model server process per Loopline Model, listening on three free 127.0.0.1 ports (REST, gRPC,
metrics), with its files in `<root>/<name>/`: `settings.json` (server), `models/<name>/
model-settings.json` (the Loopline runtime, its model URIs and canary weight) and
`server.log` (stdout and stderr of every incarnation). The manager waits for the model to be
ready, restarts a process that dies (backoff 1 s, 2 s, 4 s … 30 s) on the same ports, and
changes the served versions or the canary weight through the V2 model repository API
(`POST /v2/repository/models/{name}/load`), which swaps the model without a restart.

The process is the lean server (`lean_server.py`: the same runtime behind a bare ASGI V2 app
and a gRPC service, several times faster per request) unless the spec asks for MLServer, or
for adaptive batching, which only MLServer does (`LocalModelSpec.server`). Both read the same
files and answer the same V2 API, so the rest of this module does not care which runs.

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

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loopline import auth, quiet

log = logging.getLogger(__name__)

RUNTIME = "loopline.serving.runtime.LooplineRuntime"
HOST = "127.0.0.1"
SERVERS = ("auto", "lean", "mlserver")
PID_FILE = "server.pid"
IDENTITY_FILE = "server.json"  # how the running process was started: what adoption compares


class LocalServingError(RuntimeError):
    """A server could not be started, updated or reached; the message says which and why."""


@dataclass(frozen=True)
class LocalModelSpec:
    """What one local server should serve. `name` is the MLServer model name in the URLs."""

    name: str
    model_uri: str
    canary_model_uri: str = ""
    canary_weight: float = 0.0
    model_name: str = ""
    tracking_uri: str = ""
    monitor_url: str = ""
    sample_rate: float = 0.1
    max_batch_size: int = 0
    max_batch_time: float = 0.0
    max_rows: int = 4096
    # False: a row with a missing non-core sensor is a 422 instead of a fallback answer.
    fallback_on_missing_sensors: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # Which process hosts the runtime: `lean`, `mlserver`, or `auto` (lean unless adaptive
    # batching is asked for, which needs MLServer).
    server: str = "auto"
    # The Model's token file (shared with its drift monitor); empty: `<folder>/auth-token`.
    token_file: str = ""

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise ValueError(f"server {self.server!r}: must be one of {list(SERVERS)}")
        if self.server == "lean" and self.max_batch_size > 1:
            raise ValueError(
                "adaptive batching (max_batch_size > 1) needs server 'mlserver' or 'auto'; "
                "the lean server scores each request as it comes"
            )
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r}: must be non-empty and contain no '/'")
        if not self.model_uri:
            raise ValueError("model_uri is empty")
        if not 0.0 <= self.canary_weight <= 1.0:
            raise ValueError(f"canary_weight {self.canary_weight}: must be within 0..1")
        if self.canary_weight > 0 and not self.canary_model_uri:
            raise ValueError("canary_weight > 0 needs canary_model_uri")


@dataclass(frozen=True)
class Endpoints:
    rest: str  # http://127.0.0.1:<port>
    grpc: str  # 127.0.0.1:<port>
    metrics: str  # http://127.0.0.1:<port>/metrics

    def infer_url(self, name: str) -> str:
        return f"{self.rest}/v2/models/{name}/infer"


@dataclass
class ServerStatus:
    name: str
    state: (
        str  # starting | ready | unready (alive, model not ready) | restarting | failed | stopped
    )
    pid: int | None
    restarts: int
    endpoints: Endpoints
    log_path: Path
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["log_path"] = str(self.log_path)
        return doc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_settings(rest: int, grpc: int, metrics: int) -> dict[str, Any]:
    """MLServer's settings.json: loopback only, models in-process, no access log, no gzip."""
    return {
        "host": HOST,
        "http_port": rest,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "parallel_workers": 0,
        "debug": False,
        "gzip_enabled": False,
        "server_name": "loopline",
        "load_models_at_startup": True,
    }


def model_settings(spec: LocalModelSpec) -> dict[str, Any]:
    """model-settings.json for the Loopline runtime (pure: the manager and tests use it)."""
    extra: dict[str, Any] = {
        "model_uri": spec.model_uri,
        "canary_model_uri": spec.canary_model_uri,
        "canary_weight": spec.canary_weight,
        "model_name": spec.model_name or spec.name,
        "tracking_uri": spec.tracking_uri,
        "monitor_url": spec.monitor_url,
        "sample_rate": spec.sample_rate,
        "max_rows": spec.max_rows,
        "fallback_on_missing_sensors": spec.fallback_on_missing_sensors,
    }
    return {
        "name": spec.name,
        "implementation": RUNTIME,
        "max_batch_size": spec.max_batch_size,
        "max_batch_time": spec.max_batch_time,
        "parameters": {"uri": spec.model_uri, "extra": extra},
    }


def resolved_server(spec: LocalModelSpec) -> str:
    """`lean` or `mlserver`: the process that will host `spec`."""
    if spec.server != "auto":
        return spec.server
    return "mlserver" if spec.max_batch_size > 1 else "lean"


def server_identity(spec: LocalModelSpec) -> dict[str, Any]:
    """What a running server must share with `spec` to be adopted rather than restarted: the
    kind of process, the code it runs (the resolved interpreter of this install) and the
    environment it was given. The model it serves is not part of it: that is a hot reload."""
    return {
        "server": resolved_server(spec),
        "python": os.path.realpath(sys.executable),
        "extra_env": dict(sorted(spec.extra_env.items())),
    }


def token_path(spec: LocalModelSpec, folder: Path) -> Path:
    return Path(spec.token_file) if spec.token_file else folder / auth.TOKEN_FILE


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


def lean_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "loopline.serving.lean_server", str(folder)]


def server_command(spec: LocalModelSpec, folder: Path) -> list[str]:
    return lean_command(folder) if resolved_server(spec) == "lean" else mlserver_command(folder)


def mlserver_command(folder: Path) -> list[str]:
    """MLServer with its repository API behind the token (`mlserver_host`), not the bare
    `mlserver start`, whose load/unload anyone on the host could call."""
    return [sys.executable, "-m", "loopline.serving.mlserver_host", "start", str(folder)]


@dataclass
class _Server:
    spec: LocalModelSpec
    folder: Path
    ports: tuple[int, int, int]
    proc: subprocess.Popen[bytes] | None = None
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""
    next_restart: float = 0.0
    backoff_s: float = 1.0
    stopping: bool = False
    host: str = ""  # the resolved server of the running process
    # A process a previous manager started (not our child): watched by pid, stopped by signal.
    adopted_pid: int | None = None
    token: str | None = None  # what the running process checks and the manager sends

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self.adopted_pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.adopted_pid is not None and _runs_for(self.adopted_pid, self.folder)

    def exit_message(self) -> str:
        if self.proc is not None:
            return f"exited with code {self.proc.returncode}"
        return f"adopted process {self.adopted_pid} exited (its code is in {self.log_path})"

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
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self._servers: dict[str, _Server] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=5.0, trust_env=False)
        self._supervisor = threading.Thread(
            target=self._supervise, name="loopline-serving-supervisor", daemon=True
        )
        self._supervisor.start()

    # -- public API -------------------------------------------------------------------------

    def start(self, spec: LocalModelSpec, *, wait: bool = True) -> ServerStatus:
        """Start a server for `spec` (idempotent for a running one: then it is an update)."""
        with self._lock:
            if spec.name in self._servers and not self._servers[spec.name].stopping:
                return self.update(spec, wait=wait)
            folder = self.root / spec.name
            adopted = self._adopt(folder, spec)
            if adopted is not None:
                self._servers[spec.name] = adopted
        if adopted is not None:
            # Always a reload: the files on disk may not be what the process loaded (its
            # manager may have died between writing them and asking for the reload).
            return self.update(spec, wait=wait)
        with self._lock:
            reap_orphan(folder)
            models = folder / "models"
            if models.exists():
                shutil.rmtree(models)
            (models / spec.name).mkdir(parents=True)
            ports = (free_port(), free_port(), free_port())
            server = _Server(spec=spec, folder=folder, ports=ports)
            self._write_files(server)
            self._servers[spec.name] = server
            self._spawn(server)
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
                self._stop_process(server, 10.0)
                self._spawn(server)
                alive = False
        if alive:
            request_reload(server.endpoints.rest, spec.name, server.token, self.ready_timeout_s)
        if wait:
            self.wait_ready(spec.name)
        return self.status(spec.name)

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        """Stop the server and forget it (its folder and log stay for inspection)."""
        with self._lock:
            server = self._servers.pop(name, None)
            if server is None:
                return
            server.stopping = True
        self._stop_process(server, timeout_s)
        (server.folder / PID_FILE).unlink(missing_ok=True)
        server.state = "stopped"

    def status(self, name: str) -> ServerStatus:
        with self._lock:
            server = self._get(name)
            return ServerStatus(
                name=name,
                state=server.state,
                pid=server.pid,
                restarts=server.restarts,
                endpoints=server.endpoints,
                log_path=server.log_path,
                last_error=server.last_error,
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
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while time.monotonic() < deadline:
            with self._lock:
                server = self._get(name)
                proc = server.proc
            if server.alive() and self._ready(server):
                with self._lock:
                    server.state = "ready"
                    server.backoff_s = 1.0
                return self.status(name)
            if proc is not None and proc.poll() is not None and server.restarts == 0:
                server.state = "failed"
                server.last_error = f"exited with {proc.returncode} before ready"
                raise LocalServingError(
                    f"{name}: model server exited with code {proc.returncode} before it was "
                    f"ready; log {server.log_path}:\n{tail(server.log_path)}"
                )
            time.sleep(0.1)
        raise LocalServingError(
            f"{name}: not ready after {timeout_s or self.ready_timeout_s:.0f} s; "
            f"log {self._get(name).log_path}:\n{tail(self._get(name).log_path)}"
        )

    def close(self) -> None:
        """Stop every server and the supervisor."""
        self._stop.set()
        for name in self.names():
            self.stop(name)
        self._supervisor.join(timeout=5)
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

    def _token(self, server: _Server) -> str:
        """The Model's token, provisioned when its file does not exist (first start, or
        deleted to rotate it)."""
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
        pid = _leftover_pid(folder)
        if pid is None:
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
        server = _Server(
            spec=spec,
            folder=folder,
            ports=ports,
            adopted_pid=pid,
            host=resolved_server(spec),
        )
        server.token = self._token(server)
        if self._ready(server):  # else the supervisor marks it once it is
            server.state = "ready"
        log.info("adopted model server %s (pid %s) left running for %s", spec.name, pid, folder)
        return server

    def _stop_process(self, server: _Server, timeout_s: float) -> None:
        if server.proc is not None:
            _terminate(server.proc, timeout_s)
        elif server.adopted_pid is not None and server.alive():
            _stop_group(server.adopted_pid, timeout_s)

    def _spawn(self, server: _Server) -> None:
        quiet.apply()  # telemetry and progress bars off in the child too
        env = dict(os.environ)
        env.update(server.spec.extra_env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop(auth.TOKEN_ENV, None)
        server.token = self._token(server)
        env[auth.TOKEN_FILE_ENV] = str(token_path(server.spec, server.folder))
        logfile = server.log_path.open("ab")
        logfile.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        logfile.flush()
        try:
            server.proc = subprocess.Popen(
                server_command(server.spec, server.folder),
                cwd=server.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        server.state = "starting"
        server.host = resolved_server(server.spec)
        server.adopted_pid = None
        (server.folder / IDENTITY_FILE).write_text(
            json.dumps(self._identity(server.spec, server.folder), indent=2) + "\n"
        )
        (server.folder / PID_FILE).write_text(f"{server.proc.pid}\n")
        log.info(
            "started %s model server %s (pid %s)", server.host, server.spec.name, server.proc.pid
        )

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
            with self._lock:
                self._stop_process(server, 10.0)
                server.restarts += 1
                self._spawn(server)
                server.last_error = f"reload failed ({exc}); restarted"
            return f"reload failed ({exc}); restarted the model server"
        why = self._not_ready(server)
        with self._lock:
            if why:
                server.last_error = f"{why} after a reload"
                return f"reloaded, still not ready: {why}"
            server.state = "ready"
            server.last_error = ""
        log.info("model server %s: model reloaded and ready again", name)
        return "reloaded"

    def _supervise(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                servers = [s for s in self._servers.values() if not s.stopping]
            for server in servers:
                try:
                    self._check(server)
                except Exception:  # the loop must go on for the other servers; say why
                    log.exception("supervising model server %s failed", server.spec.name)

    def _check(self, server: _Server) -> None:
        now = time.monotonic()
        if server.alive():
            if server.state in ("starting", "restarting", "unready"):
                if self._ready(server):
                    if server.state == "unready":
                        log.info("model server %s: model ready again", server.spec.name)
                        server.last_error = ""
                    server.state = "ready"
                    server.backoff_s = 1.0
            elif server.state == "ready":
                why = self._not_ready(server)
                if why:
                    # Reported, not repaired here: the owner (the operator's reconcile, or
                    # `loopline serve`) decides, and calls `recover`.
                    with self._lock:
                        server.state = "unready"
                        server.last_error = why
                    log.warning("model server %s: %s", server.spec.name, why)
            return
        with self._lock:
            if server.stopping:
                return
            if server.state != "restarting":
                server.last_error = server.exit_message()
                server.state = "restarting"
                server.next_restart = now + server.backoff_s
                log.warning(
                    "model server %s %s; restarting in %.0f s",
                    server.spec.name,
                    server.last_error,
                    server.backoff_s,
                )
                return
            if now >= server.next_restart:
                server.restarts += 1
                server.backoff_s = min(server.backoff_s * 2, self.max_backoff_s)
                self._spawn(server)
                server.state = "restarting"
                server.next_restart = now + server.backoff_s


def reap_orphan(folder: Path, timeout_s: float = 10.0, *, what: str = "model server") -> int | None:
    """Stop a process a previous manager left running for `folder` (the operator was killed
    before it could stop its servers; they run in their own sessions, so they outlive it).
    Without this, every operator crash would leak a model server holding its ports and a
    model in memory (or a drift monitor, `what`). Returns the pid it stopped, if any.

    The pid file alone is not trusted: the pid must still run a command naming `folder`,
    so a reused pid of some other process is never signalled."""
    pid = _leftover_pid(folder)
    if pid is None:
        (folder / PID_FILE).unlink(missing_ok=True)
        return None
    log.warning("stopping %s pid %s left running for %s", what, pid, folder)
    _stop_group(pid, timeout_s)
    (folder / PID_FILE).unlink(missing_ok=True)
    return pid


def _leftover_pid(folder: Path) -> int | None:
    """The pid in `folder`'s pid file if that process still runs a command naming `folder`."""
    try:
        pid = int((folder / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _runs_for(pid, folder) else None


def _runs_for(pid: int, folder: Path) -> bool:
    """Whether `pid` is a live process whose command line names `folder` (a pid reused by
    another process after ours exited does not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(folder).encode() in cmdline and not _is_zombie(pid)


def _stop_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group `pid` leads (a server started in its own session), SIGKILL
    after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    """Exited but not yet reaped by its parent (only when the parent is still alive, as in
    tests). The leader of a thread group shows `Z` while its other threads still run, so
    the process is done only once no other task is left."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (OSError, IndexError):
        return True


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
