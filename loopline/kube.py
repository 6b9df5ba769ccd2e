"""The one place a Kubernetes client configuration is worked out.

The operator (its kopf login and its backends), the drift monitor's retraining requester and
the demo all need the same answer to "which cluster, as whom": an explicit kubeconfig when one
is configured, else the in-cluster ServiceAccount when running in a pod, else the user's
default kubeconfig. Working it out in one function keeps that order the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config


def client_configuration(kubeconfig: Path | str | None = None) -> k8s.Configuration:
    """The client configuration for `kubeconfig`, else in-cluster, else the default kubeconfig."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(client_configuration=configuration)
    return configuration


def api_client(kubeconfig: Path | str | None = None) -> k8s.ApiClient:
    """A client for `kubeconfig` (see `client_configuration` for the fallbacks)."""
    return k8s.ApiClient(client_configuration(kubeconfig))
