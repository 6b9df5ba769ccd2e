"""The backends an operator process drives, built from its settings.

Chosen by short name (`PIPELINE_BACKENDS`, `SERVING_BACKENDS`); the `local` serving backend
brings the local drift monitors with it, sharing one token per Model with its model server.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from loopline.operators.backends import PIPELINE_BACKENDS, SERVING_BACKENDS, resolve
from loopline.operators.backends.monitoring import LocalMonitoringBackend, MonitoringBackend
from loopline.operators.backends.pipelines import LocalPipelineBackend, PipelineBackend
from loopline.operators.backends.registry import RegistryBackend
from loopline.operators.backends.serving import LocalServingBackend, ServingBackend
from loopline.operators.settings import OperatorSettings


@dataclass
class Backends:
    pipelines: PipelineBackend
    serving: ServingBackend
    monitoring: MonitoringBackend | None = None  # local mode: drift monitor processes
    registry: RegistryBackend | None = None  # the champion alias; None: runs move it


def build_backends(settings: OperatorSettings, tracking_uri: str) -> Backends:
    """Instantiate the backends named in settings (import paths from the short-name maps)."""
    pipe_path = resolve("pipeline", settings.pipeline_backend, PIPELINE_BACKENDS)
    serve_path = resolve("serving", settings.serving_backend, SERVING_BACKENDS)
    pipe_cls = _import(pipe_path)
    serve_cls = _import(serve_path)
    pipelines: PipelineBackend
    serving: ServingBackend
    if pipe_cls is LocalPipelineBackend:
        pipelines = LocalPipelineBackend(settings.runs_dir, settings.worker_command or None)
    else:
        pipelines = pipe_cls(settings)
    monitoring: MonitoringBackend | None = None
    if serve_cls is LocalServingBackend:
        # One token per Model for its model server and its monitor, kept where no
        # namespace's folder can be (names never start with a dot).
        tokens_dir = settings.serving_dir / ".tokens"
        serving = LocalServingBackend(
            settings.serving_dir, tracking_uri=tracking_uri, tokens_dir=tokens_dir
        )
        monitoring = LocalMonitoringBackend(
            settings.serving_dir / "monitors",
            tracking_uri=tracking_uri,
            kubeconfig=settings.kubeconfig,
            tokens_dir=tokens_dir,
        )
    else:
        serving = serve_cls(settings)
    return Backends(pipelines, serving, monitoring, RegistryBackend(tracking_uri))


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
