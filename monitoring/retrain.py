"""Where a retraining request goes: annotations on the Model.

The monitor decides (pure, `decision.py`); a `RetrainRequester` delivers. The Kubernetes one
merge-patches two annotations onto the Model; the operator records the request in
`status.retraining` and an Event and starts at most one run per request id, so delivering the
same request twice (after a monitor restart) is harmless. The log requester keeps the requests
in memory and logs them, for a monitor run without a cluster (demo, benchmarks).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from loopline.types.common import GROUP, RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION, VERSION

from .decision import RetrainRequest

log = logging.getLogger(__name__)

MODEL_PLURAL = "models"


class RetrainRequester(Protocol):
    def request(self, request: RetrainRequest) -> None:
        """Deliver the request; raise if it did not reach its destination (it is retried)."""


def build_retrain_patch(request: RetrainRequest) -> dict[str, Any]:
    """The merge patch that raises `request` on the Model."""
    return {
        "metadata": {
            "annotations": {
                RETRAIN_ANNOTATION: request.request_id,
                RETRAIN_REASON_ANNOTATION: request.reason_json(),
            }
        }
    }


class KubernetesRetrainRequester:
    """Annotates `models.loopline.dev/<name>` through the Kubernetes API."""

    def __init__(self, api_client: Any = None, *, kubeconfig: str = "") -> None:
        from kubernetes import client

        from loopline import kube

        self._api = client.CustomObjectsApi(api_client or kube.api_client(kubeconfig or None))

    def request(self, request: RetrainRequest) -> None:
        self._api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            request.namespace,
            MODEL_PLURAL,
            request.model,
            build_retrain_patch(request),
        )
        log.info(
            "retraining requested on %s/%s: %s (features %s)",
            request.namespace,
            request.model,
            request.request_id,
            ", ".join(request.features),
        )


class LogRetrainRequester:
    """Keeps and logs requests; for monitors without a cluster."""

    def __init__(self) -> None:
        self.requests: list[RetrainRequest] = []
        self._lock = threading.Lock()

    def request(self, request: RetrainRequest) -> None:
        with self._lock:
            self.requests.append(request)
        log.warning(
            "retraining requested (not sent anywhere: requester=log): %s %s",
            request.request_id,
            request.reason_json(),
        )


def build_requester(name: str, *, kubeconfig: str = "") -> RetrainRequester:
    if name == "kubernetes":
        return KubernetesRetrainRequester(kubeconfig=kubeconfig)
    if name == "log":
        return LogRetrainRequester()
    raise ValueError(f"requester {name!r} is unknown; choose kubernetes or log")
