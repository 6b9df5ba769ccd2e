"""The kubernetes monitoring backend against the real API server (kwok's fake node runs the
pods as fake pods): what it applies is accepted, the claim binds on the local StorageClass,
applying again changes nothing, a new champion or a rotated token rolls the pod, delete leaves
nothing; and an operator with a cluster serving backend creates a monitor per Model and hands
its address to the model servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from loopline.operators.backends.kube_monitoring import KubernetesMonitoringBackend
from loopline.operators.backends.kube_objects import KubeObjects
from loopline.operators.builders.auth import DIGEST_ENV, token_secret_name
from loopline.operators.builders.kube_monitoring import CHAMPION_ANNOTATION, PORT
from loopline.operators.builders.monitoring import MonitorDesired
from loopline.operators.settings import OperatorSettings
from loopline.types.common import GROUP, VERSION
from tests.fixtures.cluster import ClusterHandle, wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
IMAGE = "loopline/runtime:kwok"  # kwok runs no container: the image need not exist
MONITOR = "drill-ae-monitor"
# (apiVersion, kind, name) of everything a monitor is made of
OBJECTS = [
    ("apps/v1", "Deployment", MONITOR),
    ("v1", "Service", MONITOR),
    ("v1", "PersistentVolumeClaim", MONITOR),
    ("networking.k8s.io/v1", "NetworkPolicy", MONITOR),
    ("v1", "ServiceAccount", "drill-ae-loopline-monitor"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "drill-ae-loopline-monitor"),
]


def _desired(namespace: str, champion: str = "1") -> MonitorDesired:
    return MonitorDesired(
        namespace=namespace,
        name="drill-ae",
        champion_version=champion,
        detector="ks",
        p_value=0.05,
        window_size=200,
        cooldown_seconds=600,
        retrain_on_drift=True,
    )


@pytest.fixture
def backend(cluster: ClusterHandle) -> Iterator[KubernetesMonitoringBackend]:
    settings = OperatorSettings(
        runtime_image=IMAGE, serving_backend="kubernetes", kubeconfig=cluster.kubeconfig
    )
    monitoring = KubernetesMonitoringBackend(settings, tracking_uri="http://mlflow.mlflow.svc:5000")
    try:
        yield monitoring
    finally:
        monitoring.close()


def _get(api: k8s.ApiClient, namespace: str, api_version: str, kind: str, name: str) -> Any:
    return KubeObjects(api).get(api_version, kind, namespace, name)


def _bound(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            claim
            if (claim := _get(api, namespace, "v1", "PersistentVolumeClaim", MONITOR))
            and claim["status"].get("phase") == "Bound"
            else None
        ),
        timeout=60,
        what=f"claim {MONITOR} Bound",
    )


def _rolled_out(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    """The Deployment once its current template's one pod is available."""

    def done() -> dict[str, Any] | None:
        deployment = _get(api, namespace, "apps/v1", "Deployment", MONITOR)
        status = (deployment or {}).get("status") or {}
        current = status.get("observedGeneration") == deployment["metadata"]["generation"]
        if current and status.get("updatedReplicas") == 1 and status.get("availableReplicas") == 1:
            return dict(deployment)
        return None

    return wait_for(done, timeout=90, what=f"Deployment {MONITOR} rolled out")


def _replica_sets(api: k8s.ApiClient, namespace: str) -> list[Any]:
    return list(
        k8s.AppsV1Api(api)
        .list_namespaced_replica_set(namespace, label_selector="loopline.dev/model=drill-ae")
        .items
    )


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_apply_makes_a_running_monitor_with_a_bound_claim(
    backend: KubernetesMonitoringBackend, kube_api: k8s.ApiClient, namespace: str
) -> None:
    url = backend.apply(_desired(namespace))
    assert url == f"http://{MONITOR}.{namespace}.svc:{PORT}"
    for api_version, kind, name in OBJECTS:
        obj = _get(kube_api, namespace, api_version, kind, name)
        assert obj is not None, f"{kind} {name} missing"
        assert obj["metadata"]["labels"]["loopline.dev/model"] == "drill-ae"
    claim = _bound(kube_api, namespace)
    assert claim["spec"]["storageClassName"]  # the cluster's default class filled in
    deployment = _rolled_out(kube_api, namespace)
    (pod,) = (
        k8s.CoreV1Api(kube_api)
        .list_namespaced_pod(namespace, label_selector="loopline.dev/component=monitor")
        .items
    )
    assert pod.status.phase == "Running"
    assert pod.spec.service_account_name == "drill-ae-loopline-monitor"
    assert [
        v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim
    ] == [MONITOR]
    env = _env(deployment)
    assert env["LOOPLINE_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == token_secret_name(
        "drill-ae"
    )
    assert env[DIGEST_ENV]["value"]  # the Secret was made by this apply
    service = _get(kube_api, namespace, "v1", "Service", MONITOR)
    assert service["spec"]["clusterIP"] not in ("", "None")
    endpoints = k8s.CoreV1Api(kube_api).read_namespaced_endpoints(MONITOR, namespace)
    assert [a.ip for s in endpoints.subsets or [] for a in s.addresses or []] == [pod.status.pod_ip]


def test_applying_the_same_monitor_again_changes_nothing(
    backend: KubernetesMonitoringBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    backend.apply(_desired(namespace))
    _bound(kube_api, namespace)
    _rolled_out(kube_api, namespace)

    def versions() -> dict[str, str]:
        found = {}
        for api_version, kind, name in OBJECTS:
            obj = _get(kube_api, namespace, api_version, kind, name)
            # status moves on its own (a pod's readiness); what we apply is in the generation
            # or, for kinds without one, the resourceVersion
            found[kind] = str(
                obj["metadata"].get("generation") or obj["metadata"]["resourceVersion"]
            )
        return found

    before = versions()
    backend.apply(_desired(namespace))
    # an operator restarted knows nothing but what the cluster holds
    settings = OperatorSettings(
        runtime_image=IMAGE, serving_backend="kubernetes", kubeconfig=cluster.kubeconfig
    )
    fresh = KubernetesMonitoringBackend(settings, tracking_uri="http://mlflow.mlflow.svc:5000")
    try:
        fresh.apply(_desired(namespace))
    finally:
        fresh.close()
    assert versions() == before
    assert len(_replica_sets(kube_api, namespace)) == 1


def test_a_new_champion_and_a_rotated_token_roll_the_pod(
    backend: KubernetesMonitoringBackend, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend.apply(_desired(namespace, champion="1"))
    first = _rolled_out(kube_api, namespace)
    backend.apply(_desired(namespace, champion="2"))
    second = _rolled_out(kube_api, namespace)
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert second["spec"]["template"]["metadata"]["annotations"][CHAMPION_ANNOTATION] == "2"
    assert second["spec"]["strategy"] == {"type": "Recreate"}
    assert len(_replica_sets(kube_api, namespace)) == 2

    # the Secret deleted: the next apply makes a new token, and the pod restarts onto it
    k8s.CoreV1Api(kube_api).delete_namespaced_secret(token_secret_name("drill-ae"), namespace)
    backend.apply(_desired(namespace, champion="2"))
    third = _rolled_out(kube_api, namespace)
    assert _env(third)[DIGEST_ENV]["value"] != _env(second)[DIGEST_ENV]["value"]
    assert len(_replica_sets(kube_api, namespace)) == 3

    # a reference reload is a restart too (the operator cannot send the monitor its token)
    backend.reload_reference(namespace, "drill-ae")
    backend.apply(_desired(namespace, champion="2"))
    fourth = _rolled_out(kube_api, namespace)
    assert fourth["metadata"]["generation"] == third["metadata"]["generation"] + 1


def test_delete_leaves_nothing_but_the_models_token(
    backend: KubernetesMonitoringBackend, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend.apply(_desired(namespace))
    _bound(kube_api, namespace)
    _rolled_out(kube_api, namespace)
    backend.delete(namespace, "drill-ae")

    def left() -> list[str]:
        return [
            f"{kind} {name}"
            for api_version, kind, name in OBJECTS
            if _get(kube_api, namespace, api_version, kind, name) is not None
        ]

    wait_for(lambda: not left(), timeout=60, what=f"the monitor's objects gone (left: {left()})")
    wait_for(
        lambda: (
            not k8s.CoreV1Api(kube_api)
            .list_namespaced_pod(namespace, label_selector="loopline.dev/component=monitor")
            .items
        ),
        timeout=60,
        what="the monitor's pod gone",
    )
    # the model servers read the same token: it is not the monitor's to delete
    assert k8s.CoreV1Api(kube_api).read_namespaced_secret(token_secret_name("drill-ae"), namespace)


def test_check_of_an_unreachable_monitor_is_none_at_once(
    backend: KubernetesMonitoringBackend, namespace: str
) -> None:
    """kwok's pods run nothing and no proxy routes ClusterIPs here: the status is unreachable,
    which `check` reports as None within its timeout, never as an error."""
    assert backend.check(namespace, "drill-ae") is None  # no monitor at all
    backend.apply(_desired(namespace))
    started = time.monotonic()
    assert backend.check(namespace, "drill-ae") is None
    assert time.monotonic() - started < 5


# ---- the operator ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    return cluster.install_crds(SELDON_CRDS)


@pytest.mark.usefixtures("seldon_crds", "loopline_crds")
def test_operator_with_cluster_serving_runs_a_monitor_per_model_for_its_servers(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seldon serving (no Seldon controller here, so nothing becomes ready): once a Model's
    run has registered a version to serve, the operator creates its monitor's Deployment and
    hands the monitor's cluster address to the Model's Server, whose pods sample to it."""
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_OPERATOR_SERVING_BACKEND", "seldon")
    monkeypatch.setenv("LOOPLINE_OPERATOR_RUNTIME_IMAGE", IMAGE)
    h.create(PIPELINE)
    apps = k8s.AppsV1Api(h.api)
    with h.running():
        # one after the other: two first runs at once race to create the fresh MLflow store
        for name in ("drill-ae", "fault-cls"):
            h.create(model_manifest(name, serving={"replicas": 1}))
            deployment = wait_for(
                lambda name=name: next(
                    iter(
                        apps.list_namespaced_deployment(
                            h.namespace, label_selector=f"loopline.dev/model={name}"
                        ).items
                    ),
                    None,
                ),
                timeout=180,  # a training run (the test worker) first
                what=f"the monitor Deployment of {name} (status: {h.status(name)})",
            )
            assert deployment.metadata.name == f"{name}-monitor"
            url = f"http://{name}-monitor.{h.namespace}.svc:{PORT}"
            wait_for(
                lambda name=name, url=url: (
                    (h.status(name).get("endpoints") or {}).get("monitor") == url
                ),
                timeout=60,
                what=f"Model {name} status naming its monitor",
            )
            server = wait_for(
                lambda name=name: _server(h, f"{name}-server"),
                timeout=60,
                what=f"Seldon Server of {name}",
            )
            env = {
                e["name"]: e.get("value") for e in server["spec"]["podSpec"]["containers"][0]["env"]
            }
            assert env["LOOPLINE_SERVING_MONITOR_URL"] == url
        h.custom.delete_namespaced_custom_object(GROUP, VERSION, h.namespace, "models", "drill-ae")
        wait_for(
            lambda: (
                not apps.list_namespaced_deployment(
                    h.namespace, label_selector="loopline.dev/model=drill-ae"
                ).items
            ),
            timeout=60,
            what="drill-ae's monitor deleted with it",
        )
    assert apps.list_namespaced_deployment(
        h.namespace, label_selector="loopline.dev/model=fault-cls"
    ).items


def _server(h: OperatorHarness, name: str) -> dict[str, Any] | None:
    servers = h.custom.list_namespaced_custom_object(
        "mlops.seldon.io", "v1alpha1", h.namespace, "servers"
    )["items"]
    return next((s for s in servers if s["metadata"]["name"] == name), None)
