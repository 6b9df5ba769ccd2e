"""The `seldon` serving backend against the real API server with Seldon Core 2's CRDs.

No Seldon controller runs here, so nothing becomes Ready; what is tested is that the backend
creates, updates and deletes the Seldon objects the serving builders describe, accepted by the
real schemas with strict field validation. The MLflow storage-URI lookup is replaced by a
function returning an s3 URI (a registered version's artifact folder is not what is tested).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline import auth
from loopline.operators.backends.seldon import SeldonServingBackend
from loopline.operators.builders.auth import DIGEST_ENV
from loopline.operators.builders.serving import ServingDesired
from loopline.operators.settings import OperatorSettings
from tests.fixtures.cluster import ClusterHandle

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
GROUP, VERSION = "mlops.seldon.io", "v1alpha1"


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    return list(cluster.install_crds(SELDON_CRDS))


def _names(api: k8s.ApiClient, namespace: str, plural: str) -> list[str]:
    items = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural
    )["items"]
    return sorted(i["metadata"]["name"] for i in items)


def _desired(namespace: str, **extra: Any) -> ServingDesired:
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": "drill-ae",
        "registered_model": f"{namespace}.drill-ae",
        "champion_version": "1",
    }
    return ServingDesired(**(fields | extra))


@pytest.mark.usefixtures("seldon_crds")
def test_seldon_objects_follow_the_desired_serving(kube_api: k8s.ApiClient, namespace: str) -> None:
    backend = SeldonServingBackend(
        OperatorSettings(seldon_image="loopline-runtime:test"),
        api=kube_api,
        storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}/artifacts/model",
    )
    observed = backend.apply(_desired(namespace))
    assert not observed.ready  # no Seldon controller here
    assert observed.endpoints["rest"].endswith("/v2/models/drill-ae")
    assert _names(kube_api, namespace, "servers") == ["drill-ae-server"]
    assert _names(kube_api, namespace, "models") == ["drill-ae-v1"]

    backend.apply(_desired(namespace, canary_version="2", canary_weight=10))
    assert _names(kube_api, namespace, "models") == ["drill-ae-v1", "drill-ae-v2"]
    experiment = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "experiments", "drill-ae"
    )
    weights = {c["name"]: c["weight"] for c in experiment["spec"]["candidates"]}
    assert weights == {"drill-ae-v1": 90, "drill-ae-v2": 10}
    seen = backend.observe(namespace, "drill-ae")
    assert seen is not None
    assert (seen.champion_version, seen.canary_version, seen.canary_weight) == ("1", "2", 10)

    backend.apply(_desired(namespace, champion_version="2"))  # promoted
    assert _names(kube_api, namespace, "models") == ["drill-ae-v2"]
    assert _names(kube_api, namespace, "experiments") == []

    backend.delete(namespace, "drill-ae")
    for plural in ("servers", "models", "experiments"):
        assert _names(kube_api, namespace, plural) == []
    assert backend.observe(namespace, "drill-ae") is None


def _server_env(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    server = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "servers", "drill-ae-server"
    )
    return {e["name"]: e for e in server["spec"]["podSpec"]["containers"][0]["env"]}


@pytest.mark.usefixtures("seldon_crds")
def test_the_model_token_secret_is_provisioned_kept_rotated_and_deleted(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    """The backend creates the Model's token Secret once, the Server reads it by reference
    (no token in its spec), a deleted Secret is a new token and a new digest (the pods roll),
    and deleting the Model deletes the Secret."""
    backend = SeldonServingBackend(
        OperatorSettings(seldon_image="loopline-runtime:test"),
        api=kube_api,
        storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}/artifacts/model",
    )
    core = k8s.CoreV1Api(kube_api)

    def token() -> str:  # as an admin reads it: the backend itself never reads the Secret
        secret = core.read_namespaced_secret("drill-ae-loopline-token", namespace)
        return base64.b64decode(secret.data[auth.SECRET_KEY]).decode()

    backend.apply(_desired(namespace))
    first = token()
    env = _server_env(kube_api, namespace)
    assert env[auth.TOKEN_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "drill-ae-loopline-token",
        "key": auth.SECRET_KEY,
    }
    digest = env[DIGEST_ENV]["value"]
    assert digest == auth.fingerprint(first)
    assert first not in str(env)
    backend.apply(_desired(namespace))  # kept, not overwritten, and the pods keep running
    assert token() == first
    assert _server_env(kube_api, namespace)[DIGEST_ENV]["value"] == digest

    core.delete_namespaced_secret("drill-ae-loopline-token", namespace)  # rotate
    backend.apply(_desired(namespace))
    rotated = token()
    assert rotated != first
    assert _server_env(kube_api, namespace)[DIGEST_ENV]["value"] == auth.fingerprint(rotated)

    backend.delete(namespace, "drill-ae")
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret("drill-ae-loopline-token", namespace)
    assert info.value.status == 404


def _policy_ports(api: k8s.ApiClient, namespace: str) -> list[int]:
    policy = k8s.NetworkingV1Api(api).read_namespaced_network_policy("drill-ae-server", namespace)
    assert policy.spec.pod_selector.match_labels == {"seldon-server-name": "drill-ae-server"}
    return sorted(p.port for p in policy.spec.ingress[0].ports)


@pytest.mark.usefixtures("seldon_crds")
def test_the_server_pods_network_policy_follows_the_setting_and_goes_with_the_model(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    """Created with the Server, replaced when the open ports change, deleted with the Model;
    MLServer's own ports stay closed."""

    def backend(ports: list[int]) -> SeldonServingBackend:
        return SeldonServingBackend(
            OperatorSettings(seldon_image="loopline-runtime:test", seldon_open_ports=ports),
            api=kube_api,
            storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}/artifacts/model",
        )

    backend([9001, 9501, 9006, 9008, 8082]).apply(_desired(namespace))
    assert _policy_ports(kube_api, namespace) == [8082, 9001, 9006, 9008, 9501]
    narrowed = backend([9001, 9501])
    narrowed.apply(_desired(namespace))
    assert _policy_ports(kube_api, namespace) == [9001, 9501]
    narrowed.delete(namespace, "drill-ae")
    with pytest.raises(ApiException) as info:
        k8s.NetworkingV1Api(kube_api).read_namespaced_network_policy("drill-ae-server", namespace)
    assert info.value.status == 404
    narrowed.delete(namespace, "drill-ae")  # deleting twice is not an error
