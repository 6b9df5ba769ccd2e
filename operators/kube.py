"""The Kubernetes client the operator and its cluster-facing backends use."""

from __future__ import annotations

from kubernetes import client as k8s

from loopline import kube
from loopline.operators.settings import OperatorSettings


def api_client(settings: OperatorSettings) -> k8s.ApiClient:
    """A Kubernetes client: the configured kubeconfig, else in-cluster, else the default."""
    return kube.api_client(settings.kubeconfig)
