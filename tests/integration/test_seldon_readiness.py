"""The `seldon` backend's readiness against the real API server with Seldon Core 2's CRDs.

No Seldon controller runs here, so the test writes the Seldon Models' status conditions the
way Seldon's controller does (through the status subresource) and checks what the
backend reports: the champion's failure as a reason the Model shows, a failed canary as
unhealthy (rolled back), a canary still loading as neither.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s

from loopline.operators.backends.seldon import SeldonServingBackend
from loopline.operators.builders.serving import MODEL_FAILED, ServingDesired
from loopline.operators.settings import OperatorSettings
from tests.fixtures.cluster import ClusterHandle

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
GROUP, VERSION = "mlops.seldon.io", "v1alpha1"


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    return list(cluster.install_crds(SELDON_CRDS))


def _set_ready(
    api: k8s.ApiClient, namespace: str, name: str, status: str, reason: str = "", message: str = ""
) -> None:
    condition = {"type": "Ready", "status": status, "reason": reason, "message": message}
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "models", name, {"status": {"conditions": [condition]}}
    )


@pytest.mark.usefixtures("seldon_crds")
def test_seldon_readiness_names_the_failing_model(kube_api: k8s.ApiClient, namespace: str) -> None:
    backend = SeldonServingBackend(
        OperatorSettings(seldon_image="loopline-runtime:test"),
        api=kube_api,
        storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}/artifacts/model",
    )
    desired = ServingDesired(
        namespace=namespace,
        name="drill-ae",
        registered_model=f"{namespace}.drill-ae",
        champion_version="1",
        canary_version="2",
        canary_weight=10,
    )
    loading = backend.apply(desired)
    assert not loading.ready
    assert loading.reason == ""  # nothing has a condition yet: deploying, not failing
    assert loading.canary_healthy is None
    assert "waiting for Seldon Model drill-ae-v1 to be Ready" in loading.message

    _set_ready(kube_api, namespace, "drill-ae-v1", "True")
    _set_ready(kube_api, namespace, "drill-ae-v2", "False", "ModelProgressing")
    progressing = backend.observe(namespace, "drill-ae")
    assert progressing is not None
    assert not progressing.ready
    assert (progressing.reason, progressing.canary_healthy) == ("", None)

    _set_ready(kube_api, namespace, "drill-ae-v2", "False", "ModelFailed", "OOMKilled")
    failed = backend.observe(namespace, "drill-ae")
    assert failed is not None
    assert failed.canary_healthy is False
    assert failed.canary_reason == "Seldon Model drill-ae-v2 is not Ready (ModelFailed: OOMKilled)"
    assert failed.reason == ""  # the champion serves: the canary is rolled back, no Degraded

    _set_ready(kube_api, namespace, "drill-ae-v1", "False", "ScheduleFailed", "no server")
    down = backend.observe(namespace, "drill-ae")
    assert down is not None
    assert down.reason == MODEL_FAILED
    assert "Seldon Model drill-ae-v1 is not Ready (ScheduleFailed: no server)" in down.message
    backend.delete(namespace, "drill-ae")
