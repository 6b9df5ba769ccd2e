"""What one local model server is given: its spec, its files, its command, its endpoints.

The process is the lean server (`lean_server.py`: the same runtime behind a bare ASGI V2 app
and a gRPC service, several times faster per request) unless the spec asks for MLServer, or
for adaptive batching, which only MLServer does (`LocalModelSpec.server`). Both read the same
files and answer the same V2 API.

Pure: `loopline.serving.local` (the manager that runs the processes), `loopline serve`, the
operator's local backend and the benchmarks build on these, and tests check them without
starting anything.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loopline import auth

RUNTIME = "loopline.serving.runtime.LooplineRuntime"
HOST = "127.0.0.1"
SERVERS = ("auto", "lean", "mlserver")


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


def lean_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "loopline.serving.lean_server", str(folder)]


def server_command(spec: LocalModelSpec, folder: Path) -> list[str]:
    return lean_command(folder) if resolved_server(spec) == "lean" else mlserver_command(folder)


def mlserver_command(folder: Path) -> list[str]:
    """MLServer with its repository API behind the token (`mlserver_host`), not the bare
    `mlserver start`, whose load/unload anyone on the host could call."""
    return [sys.executable, "-m", "loopline.serving.mlserver_host", "start", str(folder)]
