"""Build a monitor from settings and run its HTTP server (uvicorn).

`build_monitor` is what `loopline monitor serve` and the tests share; `MonitorServer` runs
uvicorn on an already-bound loopback socket in a thread, so a test gets the real port without
racing for it and stops the server (and with it the monitor's worker) when done.

`serve` takes the Model's token from the environment (`loopline.auth.load_token`: a file named
by `LOOPLINE_AUTH_TOKEN_FILE`, or `LOOPLINE_AUTH_TOKEN`) and refuses to start without one
unless `LOOPLINE_AUTH_DISABLED` is on; `MonitorServer` makes a fresh token unless given one.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Literal

import uvicorn

from loopline import auth

from .app import create_app
from .detectors import require_detector
from .metrics import MonitorMetrics
from .reference import ReferenceSource, reference_source_from_uri
from .retrain import RetrainRequester, build_requester
from .service import DriftMonitor
from .settings import MonitorSettings


def build_monitor(
    settings: MonitorSettings,
    *,
    reference_source: ReferenceSource | None = None,
    requester: RetrainRequester | None = None,
    metrics: MonitorMetrics | None = None,
) -> DriftMonitor:
    require_detector(settings.detector)  # before anything starts: a missing backend is fatal
    source = reference_source or reference_source_from_uri(
        settings.resolved_reference_uri(), tracking_uri=settings.resolved_tracking_uri()
    )
    return DriftMonitor(
        settings,
        reference_source=source,
        requester=requester or build_requester(settings.requester, kubeconfig=settings.kubeconfig),
        metrics=metrics,
    )


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


_Fresh = Literal["fresh"]


class MonitorServer:
    """uvicorn serving one monitor in a background thread."""

    def __init__(
        self,
        monitor: DriftMonitor,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | _Fresh | None = "fresh",
    ) -> None:
        self.monitor = monitor
        self.token: str | None = auth.new_token() if token == "fresh" else token
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(
            create_app(monitor, token=self.token),
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """What an authorised caller (the model server, the operator) sends."""
        return auth.bearer_headers(self.token)

    def start(self, timeout: float = 30.0) -> MonitorServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=5)
                raise RuntimeError(f"monitor server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=timeout)
        self.sock.close()

    def __enter__(self) -> MonitorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve(settings: MonitorSettings, *, reference: Path | None = None) -> None:
    """Run a monitor in the foreground until SIGINT/SIGTERM (uvicorn handles the signals)."""
    if reference is not None:
        settings = settings.model_copy(update={"reference_uri": str(reference)})
    # A detector this install cannot run is refused first: no token or reference can fix it.
    require_detector(settings.detector)
    token = auth.load_token(what=f"drift monitor of {settings.namespace}/{settings.model}")
    monitor = build_monitor(settings)
    sock = bind(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(monitor, token=token), log_level="info", access_log=False, ws="none"
    )
    uvicorn.Server(config).run(sockets=[sock])
