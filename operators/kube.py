"""The Kubernetes client the operator and its cluster-facing backends use."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from pydantic import ValidationError

from loopline import kube
from loopline.operators.settings import OperatorSettings


def api_client(settings: OperatorSettings) -> k8s.ApiClient:
    """A Kubernetes client: the configured kubeconfig, else in-cluster, else the default."""
    return kube.api_client(settings.kubeconfig)


def validation_message(exc: ValidationError, prefix: str) -> str:
    """The first problem pydantic found, with its field path, for a status message."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{prefix}.{where}: {first['msg']}"


def without_nulls(value: Any) -> Any:
    """`value` without null fields: the API server drops them, so a status compares equal to
    what was written only without them."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
