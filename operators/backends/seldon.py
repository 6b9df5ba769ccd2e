"""The `seldon` serving backend: Seldon Core 2 objects on the cluster.

The objects come from `loopline.serving.seldon` (pure builders): per Loopline Model one
`Server` running the Loopline runtime image, one Seldon `Model` per served version (champion,
and canary while one walks its steps) and, during a canary, an `Experiment` splitting traffic by
weight. This backend applies them (create, else merge-patch), deletes the versions and the
Experiment no longer wanted, and reads readiness from the Seldon Models' `Ready` condition
(the champion's and, during a canary, the canary's: a canary Seldon gave up on is reported
unhealthy, so the rollout is rolled back instead of holding forever).
Every object carries the label `loopline.dev/model`, so deletion finds all of them.

During a canary, `observe` also reports both versions' traffic since the canary's step began,
read from the Server pods' metrics (`seldon_traffic`), so the rollout is judged on its abort
metric: promoted, held or rolled back by `decide_canary`, not promoted when time runs out.

The Server's container gets the Model's settings as `LOOPLINE_SERVING_*` variables: the drift
monitor's URL (payload samples; qualified with the Model's namespace when the Seldon objects
live in another one, so the name resolves from there) and MLflow's URI as pods reach it
(`cluster_tracking_uri`, else the operator's own).

Each Model also gets its token Secret (`operators.builders.auth`), created once and never
overwritten; the Server's container reads it as `LOOPLINE_AUTH_TOKEN` (the payload sampler
sends it to the Model's drift monitor) and carries the token's digest, so a Secret deleted to
rotate the token rolls the pods onto the new one. Deleting the Model deletes the Secret.

The Server's pods get a NetworkPolicy that closes every port but the ones Seldon's components
use (`serving.seldon.build_server_network_policy`): MLServer's own repository API, which
Seldon's agent drives without a token, is reachable only over the pod's loopback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.operators.backends.kube_objects import KubeObjects
from loopline.operators.backends.seldon_status import model_readiness, observed_of, with_traffic
from loopline.operators.backends.seldon_traffic import (
    MetricsUrl,
    SeldonTraffic,
    Traffic,
    pod_metrics_url,
)
from loopline.operators.builders.auth import (
    DIGEST_ENV,
    token_env,
    token_secret_name,
)
from loopline.operators.builders.kube_serving import ASYNC_REDIS_URL_ENV
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.kube import api_client
from loopline.operators.settings import OperatorSettings
from loopline.serving.seldon import (
    MLSERVER_METRICS_PORT,
    SELDON_API_VERSION,
    build_experiment,
    build_model,
    build_server,
    build_server_network_policy,
    model_object_name,
)
from loopline.settings import Settings

__all__ = ["SeldonServingBackend", "model_readiness", "observed_of", "server_name", "serving_env"]

log = logging.getLogger(__name__)

GROUP, VERSION = SELDON_API_VERSION.split("/")
MODEL_LABEL = "loopline.dev/model"


def monitor_url_from(url: str, model_namespace: str, server_namespace: str) -> str:
    """The monitor's URL as the Server's pods resolve it: a bare Service name (`http://svc:80`)
    resolves in the pod's own namespace, so it gets the Model's namespace appended when the
    Server lives elsewhere (`seldon_namespace`); a qualified name or an IP is kept."""
    if not url or model_namespace == server_namespace:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or "." in host or ":" in host or host == "localhost":
        return url
    netloc = f"{host}.{model_namespace}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def serving_env(
    desired: ServingDesired, *, server_namespace: str = "", tracking_uri: str = ""
) -> dict[str, str]:
    """The runtime settings a Model's spec sets on its server (LOOPLINE_SERVING_*)."""
    fallback = "true" if desired.fallback_on_missing_sensors else "false"
    env = {"LOOPLINE_SERVING_FALLBACK_ON_MISSING_SENSORS": fallback}
    if desired.monitor_url:
        env["LOOPLINE_SERVING_MONITOR_URL"] = monitor_url_from(
            desired.monitor_url, desired.namespace, server_namespace or desired.namespace
        )
    if tracking_uri:
        env["LOOPLINE_SERVING_TRACKING_URI"] = tracking_uri
    return env


def server_name(model: str) -> str:
    return f"{model}-server"[:63]


def _error(what: str, exc: ApiException) -> Exception:
    if exc.status in (400, 403, 404, 409, 422):
        return BackendRejected(f"Seldon: cannot {what}: {exc.status} {exc.reason}: {exc.body}")
    return BackendUnavailable(f"Seldon: cannot {what}: {exc.status} {exc.reason}")


class SeldonServingBackend:
    def __init__(
        self,
        settings: OperatorSettings,
        *,
        api: k8s.ApiClient | None = None,
        storage_uri: Any = None,
        tracking_uri: str = "",
        metrics_url: MetricsUrl = pod_metrics_url,
    ) -> None:
        """`tracking_uri` is MLflow as the operator reaches it (version lookups); the Server's
        pods get `settings.cluster_tracking_uri` when set (MLflow as pods reach it). The
        Server pods' metrics are read at `metrics_url(pod)` (their own IP by default)."""
        image = settings.seldon_image or settings.runtime_image
        if not image:
            raise ValueError(
                "LOOPLINE_OPERATOR_SELDON_IMAGE and LOOPLINE_OPERATOR_RUNTIME_IMAGE are empty: "
                "set the Loopline runtime image the Seldon Server runs (serving backend seldon)"
            )
        self.settings = settings
        self.image = image
        self.tracking_uri = tracking_uri
        self.server_tracking_uri = settings.cluster_tracking_uri or tracking_uri
        self.async_redis_url = settings.async_redis_url  # the Servers' asynchronous inference
        api = api or api_client(settings)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.networking = k8s.NetworkingV1Api(api)
        self.objects = KubeObjects(api)
        self._storage_uri = storage_uri or self._mlflow_storage_uri
        self._lock = threading.Lock()
        self.traffic = SeldonTraffic(self._list_pods, metrics_url=metrics_url)
        if MLSERVER_METRICS_PORT not in settings.seldon_open_ports:
            log.warning(
                "LOOPLINE_OPERATOR_SELDON_OPEN_PORTS %s leaves out MLServer's metrics port %d: "
                "the operator cannot read a canary's traffic, so canaries hold until it is "
                "opened",
                settings.seldon_open_ports,
                MLSERVER_METRICS_PORT,
            )

    def _mlflow_storage_uri(self, registered_model: str, version: str) -> str:
        from mlflow import MlflowClient

        tracking = self.tracking_uri or Settings().resolved_mlflow_tracking_uri()
        try:
            return str(
                MlflowClient(tracking).get_model_version_download_uri(registered_model, version)
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"MLflow: cannot locate {registered_model} version {version}: {exc}"
            ) from exc

    def _namespace(self, desired_namespace: str) -> str:
        return self.settings.seldon_namespace or desired_namespace

    def _upsert(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        plural = obj["kind"].lower() + "s"
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, obj, field_validation="Strict"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise _error(f"create {obj['kind']} {meta['name']}", exc) from exc
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    meta["namespace"],
                    plural,
                    meta["name"],
                    {"metadata": {"labels": meta.get("labels", {})}, "spec": obj["spec"]},
                )
            except ApiException as patch_exc:
                raise _error(f"update {obj['kind']} {meta['name']}", patch_exc) from patch_exc

    def _ensure_network_policy(self, namespace: str, model: str) -> None:
        """Create or replace the Server pods' NetworkPolicy (`build_server_network_policy`)."""
        body = build_server_network_policy(
            server_name(model),
            namespace,
            open_ports=tuple(self.settings.seldon_open_ports),
            labels={MODEL_LABEL: model},
        )
        name = body["metadata"]["name"]
        try:
            self.networking.create_namespaced_network_policy(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise _error(f"create NetworkPolicy {name}", exc) from exc
            try:
                self.networking.patch_namespaced_network_policy(name, namespace, body)
            except ApiException as patch_exc:
                raise _error(f"update NetworkPolicy {name}", patch_exc) from patch_exc

    def _list(self, namespace: str, plural: str, model: str) -> list[dict[str, Any]]:
        try:
            found = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, label_selector=f"{MODEL_LABEL}={model}"
            )
        except ApiException as exc:
            raise _error(f"list {plural}", exc) from exc
        return list(found.get("items", []))

    def _delete(self, namespace: str, plural: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise _error(f"delete {plural}/{name}", exc) from exc

    def ensure_token(self, namespace: str, model: str) -> str | None:
        """Create the Model's token Secret when there is none and return the new token's
        digest; None when it exists (see `KubeObjects.ensure_token_secret`)."""
        return self.objects.ensure_token_secret(namespace, model)

    def _current_digest(self, namespace: str, model: str) -> str:
        """The token digest the Model's Server runs with now (kept while the Secret stands)."""
        for server in self._list(namespace, "servers", model):
            containers = ((server.get("spec") or {}).get("podSpec") or {}).get("containers") or []
            for container in containers:
                for entry in container.get("env") or []:
                    if entry.get("name") == DIGEST_ENV and entry.get("value"):
                        return str(entry["value"])
        # The Secret exists but no Server records its digest yet (a reconcile stopped between
        # the two): any fixed value works, the pods read the Secret itself when they start.
        return "provisioned"

    def desired_objects(
        self, desired: ServingDesired, *, digest: str | None = None
    ) -> list[dict[str, Any]]:
        """The Seldon objects for `desired` (storage URIs looked up in MLflow); the Server
        reads the Model's token Secret, and the token's `digest` in its env rolls its pods
        when the token changes."""
        ns = self._namespace(desired.namespace)
        labels = {MODEL_LABEL: desired.name}
        server = server_name(desired.name)
        versions = [desired.champion_version]
        if desired.canary_version:
            versions.append(desired.canary_version)
        objects = [
            build_server(
                server,
                ns,
                image=self.image,
                replicas=desired.replicas,
                labels=labels,
                env={
                    **({DIGEST_ENV: digest} if digest else {}),
                    **({ASYNC_REDIS_URL_ENV: self.async_redis_url} if self.async_redis_url else {}),
                    **serving_env(
                        desired, server_namespace=ns, tracking_uri=self.server_tracking_uri
                    ),
                },
                env_from_secrets=token_env(desired.name),
            )
        ]
        for version in versions:
            objects.append(
                build_model(
                    desired.name,
                    version,
                    ns,
                    storage_uri=self._storage_uri(desired.registered_model, version),
                    server=server,
                    replicas=desired.replicas,
                    labels=labels,
                )
            )
        if desired.canary_version:
            objects.append(
                build_experiment(
                    desired.name,
                    ns,
                    champion=desired.champion_version,
                    canary=desired.canary_version,
                    canary_weight=desired.canary_weight,
                    labels=labels,
                )
            )
        return objects

    def apply(self, desired: ServingDesired) -> ServingObserved:
        """Make the Seldon objects match `desired`. What it returns has no traffic: the
        reconcile judges a canary on `observe`, read before it decides (one scrape per pass)."""
        ns = self._namespace(desired.namespace)
        if not desired.canary_version:
            self.traffic.forget(desired.key)
        digest = self.ensure_token(ns, desired.name) or self._current_digest(ns, desired.name)
        wanted = self.desired_objects(desired, digest=digest)
        self._ensure_network_policy(ns, desired.name)
        with self._lock:
            for obj in wanted:
                self._upsert(obj)
            keep = {o["metadata"]["name"] for o in wanted if o["kind"] == "Model"}
            for model in self._list(ns, "models", desired.name):
                if model["metadata"]["name"] not in keep:
                    self._delete(ns, "models", model["metadata"]["name"])
            if not desired.canary_version:
                for experiment in self._list(ns, "experiments", desired.name):
                    self._delete(ns, "experiments", experiment["metadata"]["name"])
        return self._observe(ns, desired)

    def _list_pods(self, namespace: str, selector: str) -> list[k8s.V1Pod]:
        try:
            return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)
        except ApiException as exc:
            raise _error(f"list pods {selector} in {namespace}", exc) from exc

    def _traffic(self, ns: str, desired: ServingDesired) -> Traffic | None:
        """Both versions' traffic over the canary's current step; None without a canary."""
        if not desired.canary_version:
            self.traffic.forget(desired.key)
            return None
        try:
            return self.traffic.read(
                desired.key,
                ns,
                server_name(desired.name),
                model=desired.name,
                champion_version=desired.champion_version,
                canary_version=desired.canary_version,
                canary_weight=desired.canary_weight,
            )
        except BackendRejected as exc:  # e.g. no RBAC to list pods: hold, say why
            return self.traffic.held(desired.key, f"canary held: {exc}")

    def _observe(
        self, ns: str, desired: ServingDesired, *, read_traffic: bool = False
    ) -> ServingObserved:
        found = {m["metadata"]["name"]: m for m in self._list(ns, "models", desired.name)}
        observed = observed_of(ns, desired, found)
        if not (read_traffic and observed.ready and desired.canary_version):
            return observed
        traffic = self._traffic(ns, desired)
        if traffic is None:
            return observed
        return with_traffic(observed, traffic)

    def observe(self, namespace: str, name: str) -> ServingObserved | None:
        """What serves the Model now (the reconcile's reading), with the canary's traffic."""
        ns = self._namespace(namespace)
        models = self._list(ns, "models", name)
        if not models:
            self.traffic.forget(f"{namespace}/{name}")
            return None
        versions = sorted(
            (m["metadata"]["labels"].get("loopline.dev/version", "") for m in models),
            key=lambda v: int(v) if v.isdigit() else 0,
        )
        experiments = self._list(ns, "experiments", name)
        canary, weight = None, 0
        if experiments and len(versions) > 1:
            canary = versions[-1]
            for candidate in experiments[0]["spec"].get("candidates", []):
                if candidate["name"] == model_object_name(name, canary):
                    weight = int(candidate.get("weight", 0))
        champion = next(v for v in versions if v != canary)
        desired = ServingDesired(
            namespace=namespace,
            name=name,
            registered_model="",
            champion_version=champion,
            canary_version=canary,
            canary_weight=weight,
        )
        if canary is None:
            self.traffic.forget(desired.key)
        return self._observe(ns, desired, read_traffic=True)

    def delete(self, namespace: str, name: str) -> None:
        ns = self._namespace(namespace)
        self.traffic.forget(f"{namespace}/{name}")
        for plural in ("experiments", "models", "servers"):
            for obj in self._list(ns, plural, name):
                self._delete(ns, plural, obj["metadata"]["name"])
        try:
            self.core.delete_namespaced_secret(token_secret_name(name), ns)
        except ApiException as exc:
            if exc.status != 404:
                raise _error(f"delete Secret {token_secret_name(name)}", exc) from exc
        try:
            self.networking.delete_namespaced_network_policy(server_name(name), ns)
        except ApiException as exc:
            if exc.status != 404:
                raise _error(f"delete NetworkPolicy {server_name(name)}", exc) from exc

    def forget(self, namespace: str, name: str) -> None:
        """Nothing more: `delete` already removed the Model's token Secret."""
        self.traffic.forget(f"{namespace}/{name}")

    def close(self) -> None:
        self.custom.api_client.close()
