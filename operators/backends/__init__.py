"""Backends the operators drive, chosen by short name in settings (pipelines, serving,
monitoring).

The maps give import paths, as Feast and MLServer do, so a backend's heavy dependencies (the
kfp SDK, the kubernetes client for Seldon objects, MLServer) load only when it is chosen.
"""

from __future__ import annotations

PIPELINE_BACKENDS: dict[str, str] = {
    "local": "loopline.operators.backends.pipelines:LocalPipelineBackend",
    "kubernetes": "loopline.operators.backends.kube_jobs:JobPipelineBackend",
    "kfp": "loopline.operators.backends.kfp:KfpPipelineBackend",
}

SERVING_BACKENDS: dict[str, str] = {
    "local": "loopline.operators.backends.serving:LocalServingBackend",
    "kubernetes": "loopline.operators.backends.kube_serving:KubernetesServingBackend",
    "seldon": "loopline.operators.backends.seldon:SeldonServingBackend",
}

MONITORING_BACKENDS: dict[str, str] = {
    "local": "loopline.operators.backends.monitoring:LocalMonitoringBackend",
    "kubernetes": "loopline.operators.backends.kube_monitoring:KubernetesMonitoringBackend",
}


def resolve(kind: str, name: str, table: dict[str, str]) -> str:
    """The import path of backend `name`, or an error that lists the choices."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(
            f"unknown {kind} backend {name!r} (LOOPLINE_OPERATOR_{kind.upper()}_BACKEND); "
            f"choose one of: {', '.join(sorted(table))}"
        ) from None
