"""The Seldon objects Loopline builds, created on the local control plane under the real,
unmodified Seldon Core 2 CRDs (vendored in tests/fixtures/seldon-core-v2), with strict field validation:
an unknown or misspelt field, a wrong type or a missing required field fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from loopline.serving.seldon import (
    build_experiment,
    build_model,
    build_server,
    build_server_network_policy,
)

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
GROUP, VERSION = "mlops.seldon.io", "v1alpha1"


@pytest.fixture(scope="module")
def seldon_crds(cluster: Any) -> list[str]:
    if not SELDON_CRDS.is_dir():
        pytest.fail(f"Seldon CRD fixtures not found at {SELDON_CRDS}")
    return list(cluster.install_crds(SELDON_CRDS))


def create(api: k8s.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    plural = obj["kind"].lower() + "s"
    result: dict[str, Any] = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        obj["metadata"]["namespace"],
        plural,
        obj,
        field_validation="Strict",
    )
    return result


def test_built_objects_pass_the_real_schemas(
    seldon_crds: list[str], kube_api: k8s.ApiClient, namespace: str
) -> None:
    server = build_server(
        "loopline",
        namespace,
        image="loopline-runtime:dev",
        replicas=2,
        env={"LOOPLINE_SERVING_MONITOR_URL": "http://monitor:8080"},
        resources={"requests": {"cpu": "500m", "memory": "512Mi"}},
    )
    created = create(kube_api, server)
    assert created["spec"]["podSpec"]["containers"][0]["image"] == "loopline-runtime:dev"
    for version in ("6", "7", "8"):
        model = build_model(
            "drill-ae",
            version,
            namespace,
            storage_uri=f"s3://mlflow/1/run{version}/artifacts/model",
            server="loopline",
            memory="200Mi",
        )
        assert create(kube_api, model)["spec"]["storageUri"].endswith("/model")
    canary = create(
        kube_api,
        build_experiment(
            "drill-ae",
            namespace,
            champion="6",
            canary="7",
            canary_weight=10,
            shadow="8",
            shadow_percent=50,
        ),
    )
    assert canary["spec"]["candidates"][1] == {"name": "drill-ae-v7", "weight": 10}
    assert canary["spec"]["mirror"]["percent"] == 50


def test_the_schema_really_validates(
    seldon_crds: list[str], kube_api: k8s.ApiClient, namespace: str
) -> None:
    """Guards the test above: a broken object is refused, so 'created' means 'valid'."""
    model = build_model("drill-ae", "1", namespace, storage_uri="s3://x/model", server="loopline")
    model["spec"]["storageUrl"] = model["spec"].pop("storageUri")
    with pytest.raises(ApiException) as info:
        create(kube_api, model)
    assert info.value.status in (400, 422)
    experiment = build_experiment("drill-ae", namespace, champion="1", canary="2", canary_weight=5)
    experiment["spec"]["candidates"][0]["weight"] = "ninety-five"
    with pytest.raises(ApiException) as info:
        create(kube_api, experiment)
    assert info.value.status in (400, 422)


def test_the_server_network_policy_passes_the_real_schema(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    policy = build_server_network_policy("loopline", namespace)
    created = k8s.NetworkingV1Api(kube_api).create_namespaced_network_policy(
        namespace, policy, field_validation="Strict"
    )
    assert sorted(p.port for p in created.spec.ingress[0].ports) == [8082, 9001, 9006, 9008, 9501]
