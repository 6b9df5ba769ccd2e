"""The backends an operator process drives, built from its settings.

Chosen by short name (`PIPELINE_BACKENDS`, `SERVING_BACKENDS`, `MONITORING_BACKENDS`). Every
serving backend comes with a drift monitor per Model: local processes beside local model
servers (sharing one token file per Model), a Deployment per Model beside cluster ones. A
backend other than `local` is built as `cls(settings, tracking_uri=...)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from loopline.operators.backends import (
    MONITORING_BACKENDS,
    PIPELINE_BACKENDS,
    SERVING_BACKENDS,
    resolve,
)
from loopline.operators.backends.fork_client import STATE_DIR as FORK_STATE_DIR
from loopline.operators.backends.fork_client import PipelineForkWorker
from loopline.operators.backends.monitoring import LocalMonitoringBackend, MonitoringBackend
from loopline.operators.backends.pipelines import LocalPipelineBackend, PipelineBackend
from loopline.operators.backends.registry import RegistryBackend
from loopline.operators.backends.serving import LocalServingBackend, ServingBackend
from loopline.operators.settings import OperatorSettings


@dataclass
class Backends:
    pipelines: PipelineBackend
    serving: ServingBackend
    monitoring: MonitoringBackend | None = None  # None: no drift monitors (tests only)
    registry: RegistryBackend | None = None  # the champion alias; None: runs move it


def monitoring_backend_name(settings: OperatorSettings) -> str:
    """The monitoring backend settings name, or the one that fits the serving backend:
    `local` processes beside local model servers, else a Deployment per Model (`kubernetes`),
    so every served Model is watched whichever backend serves it."""
    if settings.monitoring_backend:
        return settings.monitoring_backend
    return "local" if settings.serving_backend == "local" else "kubernetes"


def build_pipeline_backend(
    settings: OperatorSettings, tracking_uri: str, *, long_lived: bool = False
) -> PipelineBackend:
    """The pipeline backend alone (`loopline score --submit` needs no other). A `long_lived`
    caller (the operator) gets the local backend's fork worker, started now, when settings
    allow it; a one-shot command would pay the worker's imports and exit."""
    pipe_cls = _import(resolve("pipeline", settings.pipeline_backend, PIPELINE_BACKENDS))
    if pipe_cls is LocalPipelineBackend:
        fork = None
        if long_lived and settings.fork_worker and not settings.worker_command:
            fork = PipelineForkWorker(
                settings.runs_dir / FORK_STATE_DIR, wait_ready=settings.fork_worker_wait_seconds
            )
            fork.start()
        return LocalPipelineBackend(
            settings.runs_dir, settings.worker_command or None, fork_worker=fork
        )
    backend: PipelineBackend = pipe_cls(settings, tracking_uri=tracking_uri)
    return backend


def build_backends(settings: OperatorSettings, tracking_uri: str) -> Backends:
    """Instantiate the backends named in settings (import paths from the short-name maps)."""
    serve_cls = _import(resolve("serving", settings.serving_backend, SERVING_BACKENDS))
    monitor_name = monitoring_backend_name(settings)
    monitor_cls = (
        _import(resolve("monitoring", monitor_name, MONITORING_BACKENDS)) if monitor_name else None
    )
    # One token per Model for its local model server and its local monitor, kept where no
    # namespace's folder can be (names never start with a dot).
    tokens_dir = settings.serving_dir / ".tokens"
    pipelines = build_pipeline_backend(settings, tracking_uri, long_lived=True)
    serving: ServingBackend
    if serve_cls is LocalServingBackend:
        serving = LocalServingBackend(
            settings.serving_dir, tracking_uri=tracking_uri, tokens_dir=tokens_dir
        )
    else:
        serving = serve_cls(settings, tracking_uri=tracking_uri)
    monitoring: MonitoringBackend | None
    if monitor_cls is None:
        monitoring = None
    elif monitor_cls is LocalMonitoringBackend:
        monitoring = LocalMonitoringBackend(
            settings.serving_dir / "monitors",
            tracking_uri=tracking_uri,
            kubeconfig=settings.kubeconfig,
            tokens_dir=tokens_dir,
        )
    else:
        monitoring = monitor_cls(settings, tracking_uri=tracking_uri)
    return Backends(pipelines, serving, monitoring, RegistryBackend(tracking_uri))


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
