"""The Kubernetes client the operator and its cluster-facing backends use."""

from __future__ import annotations

import os

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from loopline.operators.settings import OperatorSettings


def api_client(settings: OperatorSettings) -> k8s.ApiClient:
    """A Kubernetes client: the configured kubeconfig, else in-cluster, else the default."""
    if settings.kubeconfig is not None:
        return k8s_config.new_client_from_config(config_file=str(settings.kubeconfig))
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config()
