"""The `seldon` serving backend: Seldon Core 2 objects on the cluster.

The objects come from `loopline.serving.seldon` (pure builders): per Loopline Model one
`Server` running the Loopline runtime image, one Seldon `Model` per served version (champion,
and canary while one walks its steps) and, during a canary, an `Experiment` splitting traffic by
weight. This backend applies them (create, else merge-patch), deletes the versions and the
Experiment no longer wanted, and reads readiness from the Seldon Models' `Ready` condition
(the champion's and, during a canary, the canary's: a canary Seldon gave up on is reported
unhealthy, so the rollout is rolled back instead of holding forever).
Every object carries the label `loopline.dev/model`, so deletion finds all of them.

Each Model also gets its token Secret (`operators.builders.auth`), created once and never
overwritten; the Server's container reads it as `LOOPLINE_AUTH_TOKEN` (the payload sampler
sends it to the Model's drift monitor) and carries the token's digest, so a Secret deleted to
rotate the token rolls the pods onto the new one. Deleting the Model deletes the Secret.

The Server's pods get a NetworkPolicy that closes every port but the ones Seldon's components
use (`serving.seldon.build_server_network_policy`): MLServer's own repository API, which
Seldon's agent drives without a token, is reachable only over the pod's loopback.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.operators.backends.kube_objects import KubeObjects
from loopline.operators.builders.auth import (
    DIGEST_ENV,
    token_env,
    token_secret_name,
)
from loopline.operators.builders.serving import MODEL_FAILED, ServingDesired, ServingObserved
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.kube import api_client
from loopline.operators.settings import OperatorSettings
from loopline.serving.seldon import (
    SELDON_API_VERSION,
    build_experiment,
    build_model,
    build_server,
    build_server_network_policy,
    model_object_name,
)
from loopline.settings import Settings

GROUP, VERSION = SELDON_API_VERSION.split("/")
MODEL_LABEL = "loopline.dev/model"


# Model states Seldon's scheduler reports (in a condition's reason or message) once it has
# given up on a model, as opposed to one still loading.
FAILED_STATES = frozenset({"ModelFailed", "ScheduleFailed"})


def serving_env(desired: ServingDesired) -> dict[str, str]:
    """The runtime settings a Model's spec sets on its server (LOOPLINE_SERVING_*)."""
    fallback = "true" if desired.fallback_on_missing_sensors else "false"
    env = {"LOOPLINE_SERVING_FALLBACK_ON_MISSING_SENSORS": fallback}
    if desired.monitor_url:
        env["LOOPLINE_SERVING_MONITOR_URL"] = desired.monitor_url
    return env


@dataclass(frozen=True)
class Readiness:
    ready: bool
    failed: bool
    reason: str  # a condition reason when not ready (see operators/builders/serving.py)
    message: str


def model_readiness(obj: dict[str, Any] | None, name: str) -> Readiness:
    """A Seldon Model's readiness from its `Ready` condition, with why it is not ready in
    words a user can act on. Ready=False after a failure is `ModelFailed`; a Model still
    loading (or without a condition yet) is not a failure: it has no unhealthy reason."""
    if obj is None:
        return Readiness(False, False, "", f"Seldon Model {name} does not exist yet")
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return Readiness(True, False, "", f"Seldon Model {name} is Ready")
    if ready is None:
        return Readiness(False, False, "", f"waiting for Seldon Model {name} to be Ready")
    words = {str(c.get(k) or "") for c in conditions for k in ("reason", "message")}
    detail = ": ".join(str(ready.get(k)) for k in ("reason", "message") if ready.get(k))
    failed = bool(words & FAILED_STATES)
    message = f"Seldon Model {name} is not Ready" + (f" ({detail})" if detail else "")
    return Readiness(False, failed, MODEL_FAILED if failed else "", message)


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
    ) -> None:
        image = settings.seldon_image or settings.runtime_image
        if not image:
            raise ValueError(
                "LOOPLINE_OPERATOR_SELDON_IMAGE and LOOPLINE_OPERATOR_RUNTIME_IMAGE are empty: "
                "set the Loopline runtime image the Seldon Server runs (serving backend seldon)"
            )
        self.settings = settings
        self.image = image
        self.tracking_uri = settings.cluster_tracking_uri or tracking_uri
        api = api or api_client(settings)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.networking = k8s.NetworkingV1Api(api)
        self.objects = KubeObjects(api)
        self._storage_uri = storage_uri or self._mlflow_storage_uri
        self._lock = threading.Lock()

    def _mlflow_storage_uri(self, registered_model: str, version: str) -> str:
        from mlflow import MlflowClient

        tracking = Settings().resolved_mlflow_tracking_uri()
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
                env={**({DIGEST_ENV: digest} if digest else {}), **serving_env(desired)},
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
        ns = self._namespace(desired.namespace)
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
        observed = self._observe(ns, desired)
        return observed

    def _observe(self, ns: str, desired: ServingDesired) -> ServingObserved:
        found = {m["metadata"]["name"]: m for m in self._list(ns, "models", desired.name)}
        champion = model_readiness(
            found.get(model_object_name(desired.name, desired.champion_version)),
            model_object_name(desired.name, desired.champion_version),
        )
        canary = (
            model_readiness(
                found.get(model_object_name(desired.name, desired.canary_version)),
                model_object_name(desired.name, desired.canary_version),
            )
            if desired.canary_version
            else None
        )
        ready = champion.ready and (canary is None or canary.ready)
        waiting = [r for r in (champion, canary) if r is not None and not r.ready]
        # Only the champion's state makes the Model unhealthy; a failed canary is rolled back.
        reason = champion.reason
        seldon_name = f"{desired.name}.experiment" if desired.canary_version else desired.name
        return ServingObserved(
            ready=ready,
            champion_version=desired.champion_version,
            canary_version=desired.canary_version,
            canary_weight=desired.canary_weight,
            endpoints={
                "rest": f"http://seldon-mesh.{ns}/v2/models/{seldon_name}",
                "grpc": f"seldon-mesh.{ns}:80",
            },
            message="Seldon Models ready" if ready else "; ".join(r.message for r in waiting),
            reason=reason,
            canary_healthy=False if canary is not None and canary.failed else None,
            canary_reason=canary.message if canary is not None and canary.failed else "",
        )

    def observe(self, namespace: str, name: str) -> ServingObserved | None:
        ns = self._namespace(namespace)
        models = self._list(ns, "models", name)
        if not models:
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
        return self._observe(ns, desired)

    def delete(self, namespace: str, name: str) -> None:
        ns = self._namespace(namespace)
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

    def close(self) -> None:
        self.custom.api_client.close()
