"""Drift monitors on a cluster: a Deployment, Service, claim and NetworkPolicy per Model.

The objects are built by `operators.builders.kube_monitoring` and applied with server-side
apply (`KubeObjects`), so an unchanged Model changes nothing and a changed `MonitorDesired`
(a new champion, another window size) rolls the monitor's pod, as the local backend restarts
its process. The monitor keeps its window and decisions on its claim, so a rolled or
rescheduled pod goes on where the last one stopped.

Two addresses: model server pods sample to the Service's cluster DNS name (what `apply`
returns), while the operator reads the status at the Service's ClusterIP, which is routed
both from a pod and from the host of the local node, where cluster DNS names do not resolve.

The operator never reads the Model's token Secret (`KubeObjects.ensure_token_secret`), so it
cannot call the monitor's token-guarded `POST /v1/reference`. `reload_reference` restarts the
monitor's pod instead, on the next `apply` (which follows in the same reconcile): a new pod
loads the champion's reference as it starts, and its state survives the restart.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import httpx

from loopline.operators.backends.kube_objects import KubeObjects, env_value
from loopline.operators.backends.monitoring import drift_check_of
from loopline.operators.builders.auth import DIGEST_ENV
from loopline.operators.builders.kube_monitoring import (
    PORT,
    RELOAD_ANNOTATION,
    MonitorPodConfig,
    build_deployment,
    build_network_policy,
    build_role_binding,
    build_service,
    build_service_account,
    build_state_claim,
    monitor_name,
    server_peer,
    service_url,
    status_url,
)
from loopline.operators.builders.monitoring import DriftCheck, MonitorDesired
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.kube import api_client
from loopline.operators.settings import OperatorSettings

log = logging.getLogger(__name__)

STATUS_TIMEOUT = 1.0  # the status is informational: a slow monitor must not hold a reconcile
DEFAULT_CLUSTER_ROLE = "loopline-monitor"


def pod_config(settings: OperatorSettings, tracking_uri: str) -> MonitorPodConfig:
    """The monitors' shared configuration from the operator's settings; the defaults fit a
    plain-manifest install whose monitor ClusterRole is `loopline-monitor`."""
    try:
        return MonitorPodConfig(
            image=settings.runtime_image,
            tracking_uri=settings.cluster_tracking_uri or tracking_uri,
            pull_policy=settings.image_pull_policy,
            storage_class=settings.storage_class,
            volume_size=settings.monitor_volume_size,
            permissions_init=settings.volume_permissions_init,
            cluster_role=settings.monitor_cluster_role or DEFAULT_CLUSTER_ROLE,
            ingress_peers=tuple(settings.monitor_ingress_peers),
        )
    except ValueError as exc:
        raise ValueError(f"kubernetes monitoring backend: {exc}") from exc


class KubernetesMonitoringBackend:
    def __init__(
        self,
        settings: OperatorSettings,
        *,
        tracking_uri: str,
        objects: KubeObjects | None = None,
    ) -> None:
        self.config = pod_config(settings, tracking_uri)
        # Seldon runs a Model's model servers as the pods of its Server; the kubernetes
        # serving backend as the Model's own `server` pods.
        self._seldon = settings.serving_backend == "seldon"
        self._seldon_namespace = settings.seldon_namespace
        self._api = None if objects is not None else api_client(settings)
        self.objects = objects or KubeObjects(self._api)
        self._addresses: dict[str, str] = {}  # key -> the Service's ClusterIP URL
        self._reloads: dict[str, str] = {}  # key -> stamp for the next apply
        self._unreachable: set[str] = set()
        self._deleted: set[str] = set()  # deleted since the last apply: nothing to delete
        self._lock = threading.Lock()

    def _servers(self, namespace: str, name: str) -> dict[str, Any]:
        if not self._seldon:
            return server_peer(name)
        return server_peer(name, seldon_namespace=self._seldon_namespace or namespace)

    def apply(self, desired: MonitorDesired) -> str:
        namespace, name, key = desired.namespace, desired.name, desired.key
        try:
            monitor = monitor_name(name)
        except ValueError as exc:
            raise BackendRejected(str(exc)) from exc
        with self._lock:
            self._deleted.discard(key)
        digest = self.objects.ensure_token_secret(namespace, name)
        current = self.objects.get("apps/v1", "Deployment", namespace, monitor)
        template = ((current or {}).get("spec") or {}).get("template") or {}
        if digest is None:  # the Secret was there: keep the digest the pod runs with
            digest = env_value(template.get("spec"), DIGEST_ENV)
        with self._lock:
            pending = self._reloads.pop(key, "")
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        reload = (pending if current is not None else "") or annotations.get(RELOAD_ANNOTATION, "")
        try:
            for obj in (
                build_service_account(namespace, name),
                build_role_binding(namespace, name, self.config.cluster_role),
                build_state_claim(namespace, name, self.config),
                build_network_policy(namespace, name, self.config, self._servers(namespace, name)),
                build_deployment(desired, self.config, token_digest=digest, reload=reload),
            ):
                self.objects.apply(obj)
            service = self.objects.apply(build_service(namespace, name))
        except ValueError as exc:
            raise BackendRejected(f"drift monitor of {key}: {exc}") from exc
        except BackendUnavailable:
            if pending:
                with self._lock:
                    self._reloads.setdefault(key, pending)
            raise
        address = _address(service)
        if address:
            with self._lock:
                self._addresses[key] = address
        if pending and current is not None:
            log.info("drift monitor of %s restarts to load the new champion's reference", key)
        return service_url(namespace, name)

    def _status_base(self, namespace: str, name: str) -> str | None:
        key = f"{namespace}/{name}"
        with self._lock:
            address = self._addresses.get(key)
        if address is None:
            service = self.objects.get("v1", "Service", namespace, monitor_name(name))
            address = _address(service) if service is not None else None
            if address is None:
                return None
            with self._lock:
                self._addresses[key] = address
        return address

    def check(self, namespace: str, name: str) -> DriftCheck | None:
        key = f"{namespace}/{name}"
        try:
            base = self._status_base(namespace, name)
        except (BackendUnavailable, ValueError) as exc:
            log.warning("drift monitor of %s: cannot find its Service: %s", key, exc)
            return None
        if base is None:
            return None
        try:
            response = httpx.get(f"{base}/v1/status", timeout=STATUS_TIMEOUT, trust_env=False)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            if key not in self._unreachable:  # once per outage, not every reconcile
                log.warning("drift monitor of %s is not answering at %s: %s", key, base, exc)
                self._unreachable.add(key)
            return None
        self._unreachable.discard(key)
        return drift_check_of(doc)

    def reload_reference(self, namespace: str, name: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            self._reloads[f"{namespace}/{name}"] = stamp

    def delete(self, namespace: str, name: str) -> None:
        """Remove the monitor and its state (the token Secret stays: the model servers use
        it too)."""
        key = f"{namespace}/{name}"
        with self._lock:
            if key in self._deleted:  # called on every reconcile of a Model without a monitor
                return
            self._addresses.pop(key, None)
            self._reloads.pop(key, None)
            self._unreachable.discard(key)
        try:
            monitor = monitor_name(name)
        except ValueError:
            return  # no monitor could ever have been created for this name
        account = build_service_account(namespace, name)["metadata"]["name"]
        for api_version, kind, obj_name in (
            ("apps/v1", "Deployment", monitor),
            ("v1", "Service", monitor),
            ("networking.k8s.io/v1", "NetworkPolicy", monitor),
            ("v1", "PersistentVolumeClaim", monitor),
            ("rbac.authorization.k8s.io/v1", "RoleBinding", account),
            ("v1", "ServiceAccount", account),
        ):
            self.objects.delete(api_version, kind, namespace, obj_name)
        with self._lock:
            self._deleted.add(key)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _address(service: dict[str, Any]) -> str | None:
    """The monitor Service's ClusterIP URL; None while it has none."""
    spec = service.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    if not cluster_ip or cluster_ip == "None":
        return None
    ports = spec.get("ports") or [{}]
    return status_url(cluster_ip, int(ports[0].get("port") or PORT))
