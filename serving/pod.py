"""A model server as the one process of a pod (the `kubernetes` serving backend).

The lean server (and MLServer) read their configuration from a folder (`settings.json`,
`models/<name>/model-settings.json`: `local_spec`). In a pod the folder is written from the
container's arguments into a writable volume, on every start, and the process then becomes
the server (`exec`): it is the container's main process, so the kubelet's SIGTERM reaches the
server itself, which stops taking connections, finishes the requests in flight and exits.

Unlike a local server it listens on every interface, on fixed ports the pod declares, and it
reads the Model's token from `LOOPLINE_AUTH_TOKEN` (the Secret, by reference). A new version
or canary weight is a new pod (a rolling update), never a reload inside one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from loopline.serving.local_spec import (
    LocalModelSpec,
    model_settings,
    server_command,
    server_settings,
)

POD_HOST = "0.0.0.0"  # a pod's own network namespace: the Service and probes reach every port


@dataclass(frozen=True)
class PodPorts:
    http: int = 8080
    grpc: int = 8081
    metrics: int = 8082

    def __post_init__(self) -> None:
        ports = (self.http, self.grpc, self.metrics)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"ports {ports}: three different ports in 1..65535")


def write_server_folder(
    folder: Path, spec: LocalModelSpec, ports: PodPorts, host: str = POD_HOST
) -> Path:
    """Write the folder the server reads (replacing what an earlier start left) and return it."""
    target = folder / "models" / spec.name / "model-settings.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in (folder / "models").iterdir():
        if stale.name != spec.name and (stale / "model-settings.json").is_file():
            (stale / "model-settings.json").unlink()  # the server wants exactly one model
    settings = {**server_settings(ports.http, ports.grpc, ports.metrics), "host": host}
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    target.write_text(json.dumps(model_settings(spec), indent=2) + "\n")
    return folder


def exec_server(spec: LocalModelSpec, folder: Path) -> None:
    """Replace this process with the server for `folder` (never returns)."""
    command = server_command(spec, folder)
    os.execv(command[0], command)
