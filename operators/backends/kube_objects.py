"""The namespaced Kubernetes objects the cluster backends own, applied as desired state.

Every cluster backend (model servers, drift monitors, training Jobs) builds plain dicts with
pure `build_*` functions and hands them here. `apply` is a server-side apply under one field
manager, so the API server computes the change: applying the same object twice changes
nothing (no new resourceVersion, no rollout), a field the builder stops setting is removed,
and a field someone else manages (an HPA's replicas, a mutating webhook's) is left alone
unless it conflicts with ours, which ours then wins (`force`).

Paths are worked out from the object's apiVersion and kind, without API discovery: the kinds
the operator creates are fixed, and discovery would cost a round of requests per client.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline import auth
from loopline.operators.builders.auth import DIGEST_ENV, build_token_secret, digest_env
from loopline.operators.errors import BackendUnavailable

FIELD_MANAGER = "loopline-operator"

# kind -> plural, for the kinds whose plural is not `<kind lowercased>s`.
_PLURALS = {"NetworkPolicy": "networkpolicies", "Endpoints": "endpoints"}


def plural(kind: str) -> str:
    return _PLURALS.get(kind, kind.lower() + "s")


def resource_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    """/api/v1/namespaces/ns/services[/name] or /apis/apps/v1/namespaces/ns/deployments[/name]."""
    if not namespace:
        raise ValueError(f"{kind}: a namespace is needed (the operator's objects are namespaced)")
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural(kind)}"
    return f"{path}/{name}" if name else path


def api_error(what: str, exc: ApiException) -> BackendUnavailable:
    """A BackendUnavailable that says what failed and what the API server answered."""
    detail = ""
    if exc.body:
        try:
            detail = str(json.loads(exc.body).get("message") or "")
        except (ValueError, AttributeError):
            detail = str(exc.body)[:300]
    suffix = f": {detail}" if detail else ""
    return BackendUnavailable(f"cannot {what}: {exc.status} {exc.reason}{suffix}")


class KubeObjects:
    """Apply, read, list and delete namespaced objects through one API client."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        return self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=True,
        )

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` (create it, or make our fields of it match)."""
        meta = obj["metadata"]
        kind, name, namespace = obj["kind"], meta["name"], meta.get("namespace", "")
        path = resource_path(obj["apiVersion"], kind, namespace, name)
        try:
            result = self._call(
                "PATCH",
                path,
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                body=obj,
                content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            raise api_error(f"apply {kind} {namespace}/{name}", exc) from exc
        return dict(result)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result = self._call("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(f"read {kind} {namespace}/{name}", exc) from exc
        return dict(result)

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        try:
            result = self._call(
                "GET",
                resource_path(api_version, kind, namespace),
                query=[("labelSelector", label_selector)],
            )
        except ApiException as exc:
            raise api_error(f"list {plural(kind)} in {namespace} ({label_selector})", exc) from exc
        return list(result.get("items") or [])

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        propagation: str = "Background",
    ) -> None:
        """Delete one object (and, by propagation, what it owns); absent is fine."""
        try:
            self._call(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                body={"propagationPolicy": propagation},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(f"delete {kind} {namespace}/{name}", exc) from exc

    def ensure_token_secret(self, namespace: str, model: str) -> str | None:
        """Create the Model's token Secret when there is none (first reconcile, or deleted to
        rotate) and return the new token's digest; None when it exists. An existing Secret is
        never read nor overwritten: the operator may create and delete Secrets but not read
        them, and the pods already use its token."""
        body = build_token_secret(namespace, model, auth.new_token())
        try:
            self._call("POST", resource_path("v1", "Secret", namespace), body=body)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise api_error(f"create Secret {namespace}/{body['metadata']['name']}", exc) from exc
        return str(digest_env(body["stringData"][auth.SECRET_KEY])[DIGEST_ENV])


def env_value(pod_spec: dict[str, Any] | None, name: str) -> str | None:
    """The plain value of env var `name` in the first container of a pod spec that sets it
    (how a backend finds the token digest its pods run with)."""
    for container in (pod_spec or {}).get("containers") or []:
        for entry in container.get("env") or []:
            if entry.get("name") == name and "value" in entry:
                return str(entry["value"])
    return None
