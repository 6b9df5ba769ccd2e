"""The `kubernetes` serving backend: a Deployment and a Service per Model, nothing else.

For a factory that serves with Kubernetes alone (no Seldon Core, no service mesh): the objects
come from `operators/builders/kube_serving.py` (pure), are server-side applied through
`KubeObjects` (an unchanged Model changes nothing on the cluster), and are read back to
report readiness. The Deployment remembers what it serves (annotations), so this backend keeps
no state a restart would lose but the canary step windows.

Canary: every pod holds both versions and splits by weight, as a local server does; each step
is a rolling update. Traffic of the step is read from each ready pod of the current template
(`http://<pod IP>:8082/metrics`), summed over pods and windowed since the step began
(`canary_stats.StepWindows`), so `decide_canary` judges it exactly as locally. The operator
must reach pod IPs for that (it does in-cluster); when it reads no pod, the canary holds at its
step and the Model's status says why (as the Seldon backend does), never judged on made-up
numbers. `canary_without_metrics: time` passes such steps after stepSeconds instead, for an
operator that knowingly cannot reach its pods.

The Model's token Secret is created once (`KubeObjects.ensure_token_secret`) and read by the
pods by reference; its digest stays in the pod template, so deleting the Secret (a rotation)
rolls the pods onto the new token. `forget` deletes it when the Model goes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from kubernetes import client as k8s

from loopline.operators.backends.canary_stats import StepWindows, scrape
from loopline.operators.backends.kube_objects import KubeObjects, env_value
from loopline.operators.builders.auth import DIGEST_ENV, token_secret_name
from loopline.operators.builders.canary import VersionStats
from loopline.operators.builders.kube_serving import (
    COMPONENT,
    COMPONENT_LABEL,
    METRICS_PORT,
    MODEL_LABEL,
    build_deployment,
    build_service,
    server_name,
)
from loopline.operators.builders.kube_serving_status import metrics_urls, observe_serving, served
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.operators.errors import BackendRejected
from loopline.operators.kube import api_client
from loopline.operators.settings import OperatorSettings

log = logging.getLogger(__name__)

DEPLOYMENT = ("apps/v1", "Deployment")
SERVICE = ("v1", "Service")
POD = ("v1", "Pod")
# The token Secret exists but no Deployment records its digest (a reconcile stopped between
# the two): any fixed value does, the pods read the Secret itself when they start.
UNKNOWN_DIGEST = "provisioned"


def server_selector(model: str) -> str:
    """The Model's server objects only: its drift monitor carries the same model label."""
    return f"{MODEL_LABEL}={model},{COMPONENT_LABEL}={COMPONENT}"


class KubernetesServingBackend:
    def __init__(
        self,
        settings: OperatorSettings,
        *,
        tracking_uri: str,
        api: k8s.ApiClient | None = None,
        scrape_timeout_s: float = 2.0,
    ) -> None:
        if not settings.runtime_image:
            raise ValueError(
                "LOOPLINE_OPERATOR_RUNTIME_IMAGE is empty: set the Loopline runtime image the "
                "model server pods run (serving backend kubernetes)"
            )
        self.image = settings.runtime_image
        self.pull_policy = settings.image_pull_policy
        # The MLflow server as the pods reach it, which may not be how the operator does.
        self.tracking_uri = settings.cluster_tracking_uri or tracking_uri
        self.async_redis_url = settings.async_redis_url
        self.service_account = settings.server_service_account
        self.service_account_namespaces = frozenset(settings.server_service_account_namespaces)
        self._own_api = api is None
        self.objects = KubeObjects(api or api_client(settings))
        self.scrape_timeout_s = scrape_timeout_s
        self.hold_without_metrics = settings.canary_without_metrics == "hold"
        self._windows = StepWindows()  # each Model's counters when its canary step began

    def _digest(self, namespace: str, model: str) -> str:
        """The token digest for the pod template: the new token's when the Secret was just
        created, else the one the Deployment runs with."""
        created = self.objects.ensure_token_secret(namespace, model)
        if created is not None:
            return created
        current = self.objects.get(*DEPLOYMENT, namespace, server_name(model))
        template = ((current or {}).get("spec") or {}).get("template") or {}
        return env_value(template.get("spec"), DIGEST_ENV) or UNKNOWN_DIGEST

    def _service_account(self, namespace: str) -> str:
        """The model servers' ServiceAccount where it exists (the chart makes it only in the
        namespaces it lists); elsewhere none, as a pod naming a missing one is never created."""
        if self.service_account_namespaces and namespace not in self.service_account_namespaces:
            return ""
        return self.service_account

    def desired_objects(self, desired: ServingDesired, digest: str) -> list[dict[str, Any]]:
        try:
            return [
                build_service(desired.namespace, desired.name),
                build_deployment(
                    desired,
                    image=self.image,
                    pull_policy=self.pull_policy,
                    tracking_uri=self.tracking_uri,
                    digest=digest,
                    async_redis_url=self.async_redis_url,
                    service_account=self._service_account(desired.namespace),
                ),
            ]
        except ValueError as exc:
            raise BackendRejected(f"kubernetes serving: {exc}") from exc

    def apply(self, desired: ServingDesired) -> ServingObserved:
        try:
            server_name(desired.name)
        except ValueError as exc:
            raise BackendRejected(f"kubernetes serving: {exc}") from exc
        digest = self._digest(desired.namespace, desired.name)
        applied: dict[str, Any] = {}
        for obj in self.desired_objects(desired, digest):
            applied = self.objects.apply(obj)  # the Deployment last: its state is reported
        return self._observe(desired.namespace, desired.name, applied)

    def observe(self, namespace: str, name: str) -> ServingObserved | None:
        try:
            deployment_name = server_name(name)
        except ValueError:
            return None  # never applied: apply refuses the name
        deployment = self.objects.get(*DEPLOYMENT, namespace, deployment_name)
        if deployment is None:
            return None
        return self._observe(namespace, name, deployment)

    def _observe(self, namespace: str, name: str, deployment: dict[str, Any]) -> ServingObserved:
        pods = self.objects.list(*POD, namespace, server_selector(name))
        observed = observe_serving(deployment, pods, namespace, name)
        if not (observed.ready and observed.canary_version and observed.champion_version):
            return observed
        now = served(deployment)
        urls = metrics_urls(pods, now.revision)
        window = self._windows.window(
            f"{namespace}/{name}",
            (observed.canary_version, observed.canary_weight),
            scrape(urls, timeout=self.scrape_timeout_s),
            model=name,
            champion_version=observed.champion_version,
            canary_version=observed.canary_version,
        )
        if window is None:
            if not self.hold_without_metrics:
                return observed  # no stats: the step passes after stepSeconds
            note = (
                f"canary held: no metrics read from {len(urls)} ready pod(s) of "
                f"{namespace}/{deployment['metadata']['name']} (port {METRICS_PORT}/metrics)"
            )
            log.warning("%s/%s: %s", namespace, name, note)
            empty = VersionStats()
            return replace(
                observed,
                champion_stats=empty,
                canary_stats=empty,
                message=f"{observed.message}; {note}" if observed.message else note,
            )
        return replace(observed, champion_stats=window[0], canary_stats=window[1])

    def delete(self, namespace: str, name: str) -> None:
        """Remove the Model's server Deployment and Service (found by label: whatever name
        an older operator gave them)."""
        self._windows.forget(f"{namespace}/{name}")
        for api_version, kind in (DEPLOYMENT, SERVICE):
            for obj in self.objects.list(api_version, kind, namespace, server_selector(name)):
                self.objects.delete(api_version, kind, namespace, obj["metadata"]["name"])

    def forget(self, namespace: str, name: str) -> None:
        """The Model is gone: its token Secret goes too (the monitor's pods are gone by now)."""
        self.objects.delete("v1", "Secret", namespace, token_secret_name(name))

    def close(self) -> None:
        if self._own_api:
            self.objects.api.close()
