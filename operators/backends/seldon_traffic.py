"""A Seldon canary's traffic, read from the Model's Server pods: what `decide_canary` judges.

Seldon runs both versions of a canary on the Model's Server pods (labelled
`seldon-server-name: <server>` by Seldon's controller), each version a Seldon Model the
Loopline runtime serves inside MLServer. The runtime's `loopline_*` series come out of
MLServer's metrics port on every pod, labelled with the Loopline Model and the registry
version (`loopline.serving.seldon.build_model` passes both). Each ready pod is read
directly: no Prometheus server is needed, and a pod that cannot be read drops out of the sum.

A canary whose traffic cannot be read at all is held (zero requests), never promoted on time
alone: it would go to 100% without its abort metric ever being checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kubernetes import client as k8s

from loopline.operators.backends.canary_stats import StepWindows, scrape
from loopline.operators.builders.canary import VersionStats
from loopline.serving.seldon import METRICS_PATH, MLSERVER_METRICS_PORT, SERVER_POD_LABEL

log = logging.getLogger(__name__)

ListPods = Callable[[str, str], list[k8s.V1Pod]]  # (namespace, label selector) -> pods
MetricsUrl = Callable[[k8s.V1Pod], str]
Fetch = Callable[[Mapping[str, str]], dict[str, str]]  # {pod: url} -> {pod: metrics text}


def pod_metrics_url(pod: k8s.V1Pod) -> str:
    """MLServer's metrics endpoint on the pod's own IP (no Service fronts that port)."""
    return f"http://{pod.status.pod_ip}:{MLSERVER_METRICS_PORT}{METRICS_PATH}"


def pod_ready(pod: k8s.V1Pod) -> bool:
    """Running, Ready, with an IP, and not being deleted: a pod whose counters mean something."""
    status = pod.status
    if pod.metadata.deletion_timestamp is not None or status is None:
        return False
    if status.phase != "Running" or not status.pod_ip:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def ready_pod_urls(pods: Iterable[k8s.V1Pod], metrics_url: MetricsUrl) -> dict[str, str]:
    """Pod name -> its metrics URL, for the ready pods only."""
    return {p.metadata.name: metrics_url(p) for p in pods if pod_ready(p)}


@dataclass(frozen=True)
class Traffic:
    champion: VersionStats
    canary: VersionStats
    note: str = ""  # why the numbers are empty, for the operator's log and the Model's message


class SeldonTraffic:
    """Per Model, the champion's and the canary's traffic since the canary's step began."""

    def __init__(
        self,
        list_pods: ListPods,
        *,
        metrics_url: MetricsUrl = pod_metrics_url,
        fetch: Fetch = scrape,
    ) -> None:
        self._list_pods = list_pods
        self._metrics_url = metrics_url
        self._fetch = fetch
        self._windows = StepWindows()

    def read(
        self,
        key: str,
        namespace: str,
        server: str,
        *,
        model: str,
        champion_version: str,
        canary_version: str,
        canary_weight: int,
    ) -> Traffic:
        """Traffic of both versions over the current step (`key` names the Model; a new
        canary version or weight starts a new step, whose first reading is all zeros)."""
        pods = self._list_pods(namespace, f"{SERVER_POD_LABEL}={server}")
        urls = ready_pod_urls(pods, self._metrics_url)
        texts = self._fetch(urls) if urls else {}
        window = self._windows.window(
            key,
            (canary_version, canary_weight),
            texts,
            model=model,
            champion_version=champion_version,
            canary_version=canary_version,
        )
        if window is None:
            where = f"{len(urls)} ready pod(s) of Server {namespace}/{server}"
            note = (
                f"canary held: no metrics read from {where} "
                f"(port {MLSERVER_METRICS_PORT}{METRICS_PATH})"
            )
            log.warning("%s: %s", key, note)
            return Traffic(VersionStats(), VersionStats(), note)
        return Traffic(*window)

    def held(self, key: str, note: str) -> Traffic:
        """No reading possible (the pods cannot be listed): hold the canary, say why."""
        log.warning("%s: %s", key, note)
        return Traffic(VersionStats(), VersionStats(), note)

    def forget(self, key: str) -> None:
        self._windows.forget(key)
