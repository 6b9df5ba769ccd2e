"""The `kubernetes` serving backend against the real API server, controllers and scheduler.

The objects it applies must be accepted as they are (server-side apply, the API server's own
validation), the Deployment controller and the scheduler place the pods on the kwok node, and
kwok marks them Running and Ready, so the Deployment becomes available and `observe` reports
ready. Pods do not execute under kwok: no model server answers, so canary traffic cannot be read
here: by default the step holds with empty stats and says why in the message (the operator's
`canary_without_metrics: time` passes it on time instead); tests/unit/test_kube_serving_canary.py
feeds decisions from real /metrics, tests/realnode serves for real.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline import auth
from loopline.operators.backends.kube_serving import KubernetesServingBackend
from loopline.operators.builders.auth import DIGEST_ENV
from loopline.operators.builders.kube_serving import REVISION_LABEL
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.operators.settings import OperatorSettings
from loopline.types.model import ServingResources
from tests.fixtures.cluster import ClusterHandle, wait_for

IMAGE = "loopline/runtime:test"
NAME = "drill-ae"
SERVER = f"{NAME}-server"
SELECTOR = f"loopline.dev/model={NAME},loopline.dev/component=server"


@pytest.fixture
def backend(kube_api: k8s.ApiClient) -> Iterator[KubernetesServingBackend]:
    settings = OperatorSettings(
        runtime_image=IMAGE,
        image_pull_policy="Never",
        cluster_tracking_uri="http://mlflow.loopline-system.svc:5000",
    )
    serving = KubernetesServingBackend(
        settings, tracking_uri="sqlite:///unused.db", api=kube_api, scrape_timeout_s=0.5
    )
    yield serving
    serving.close()


def _desired(namespace: str, **extra: Any) -> ServingDesired:
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": NAME,
        "registered_model": f"{namespace}.{NAME}",
        "champion_version": "1",
        "replicas": 2,
    }
    return ServingDesired(**(fields | extra))


def _deployment(api: k8s.ApiClient, namespace: str) -> Any:
    return k8s.AppsV1Api(api).read_namespaced_deployment(SERVER, namespace)


def _pods(api: k8s.ApiClient, namespace: str) -> list[Any]:
    return list(k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=SELECTOR).items)


def _wait_ready(
    backend: KubernetesServingBackend, cluster: ClusterHandle, namespace: str, weight: int = 0
) -> ServingObserved:
    def probe() -> ServingObserved | None:
        seen = backend.observe(namespace, NAME)
        return seen if seen is not None and seen.ready and seen.canary_weight == weight else None

    try:
        return wait_for(probe, timeout=90, what=f"{NAME} serving ready at weight {weight}")
    except BaseException:
        print(cluster.snapshot(namespace))
        raise


def test_apply_serves_on_the_cluster(
    backend: KubernetesServingBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    first = backend.apply(_desired(namespace))
    assert not first.ready  # just created: no pod is available yet
    assert first.reason == ""  # rolling out, not unhealthy
    deployment = _deployment(kube_api, namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.image == IMAGE
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.lifecycle.pre_stop.sleep.seconds > 0  # the API server kept the action
    assert "--tracking-uri=http://mlflow.loopline-system.svc:5000" in container.args
    service = k8s.CoreV1Api(kube_api).read_namespaced_service(SERVER, namespace)
    assert service.spec.cluster_ip
    assert {p.name: p.port for p in service.spec.ports}["http"] == 8080

    observed = _wait_ready(backend, cluster, namespace)
    assert observed.champion_version == "1"
    assert observed.canary_version is None
    assert observed.endpoints == {
        "rest": f"http://{SERVER}.{namespace}.svc:8080",
        "grpc": f"{SERVER}.{namespace}.svc:8081",
    }
    assert len(_pods(kube_api, namespace)) == 2


def test_an_unchanged_apply_changes_nothing(
    backend: KubernetesServingBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    resources = ServingResources.model_validate(
        {"requests": {"cpu": "0.25", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    )
    backend.apply(_desired(namespace, resources=resources))
    _wait_ready(backend, cluster, namespace)
    before = _deployment(kube_api, namespace)
    service = k8s.CoreV1Api(kube_api).read_namespaced_service(SERVER, namespace)
    pods = sorted(p.metadata.name for p in _pods(kube_api, namespace))
    assert before.spec.template.spec.containers[0].resources.requests == {
        "cpu": "250m",  # normalised by the API server; the next apply still changes nothing
        "memory": "256Mi",
    }
    again = backend.apply(_desired(namespace, resources=resources))
    assert again.ready
    after = _deployment(kube_api, namespace)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.metadata.generation == before.metadata.generation
    assert (
        k8s.CoreV1Api(kube_api).read_namespaced_service(SERVER, namespace).metadata.resource_version
        == service.metadata.resource_version
    )
    assert sorted(p.metadata.name for p in _pods(kube_api, namespace)) == pods


def test_a_new_canary_weight_rolls_the_pods(
    backend: KubernetesServingBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    backend.apply(_desired(namespace, canary_version="2", canary_weight=10))
    ten = _wait_ready(backend, cluster, namespace, weight=10)
    assert (ten.champion_version, ten.canary_version) == ("1", "2")
    # kwok's pods answer no /metrics: nothing to judge, so the step holds and says why
    assert ten.canary_stats is not None
    assert ten.canary_stats.requests == 0
    assert ten.champion_stats is not None
    assert ten.champion_stats.requests == 0
    assert ten.message is not None
    assert "canary held: no metrics read from 2 ready pod(s)" in ten.message
    old_pods = {p.metadata.name for p in _pods(kube_api, namespace)}
    before = _deployment(kube_api, namespace)

    rolling = backend.apply(_desired(namespace, canary_version="2", canary_weight=50))
    assert not rolling.ready  # a new template: not ready until the rollout is done
    after = _deployment(kube_api, namespace)
    assert after.metadata.generation == before.metadata.generation + 1
    assert "--canary-weight=0.5" in after.spec.template.spec.containers[0].args
    new_revision = after.spec.template.metadata.labels[REVISION_LABEL]
    assert new_revision != before.spec.template.metadata.labels[REVISION_LABEL]
    assert after.spec.strategy.rolling_update.max_unavailable == 0

    fifty = _wait_ready(backend, cluster, namespace, weight=50)
    assert fifty.canary_version == "2"
    pods = _pods(kube_api, namespace)
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert {p.metadata.labels[REVISION_LABEL] for p in live} == {new_revision}
    assert not {p.metadata.name for p in live} & old_pods

    promoted = backend.apply(_desired(namespace, champion_version="2"))
    assert not promoted.ready
    done = _wait_ready(backend, cluster, namespace)
    assert (done.champion_version, done.canary_version) == ("2", None)


def test_the_token_is_created_once_and_a_rotation_rolls_the_pods(
    backend: KubernetesServingBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    core = k8s.CoreV1Api(kube_api)

    def token() -> str:  # as an admin reads it: the backend itself never reads the Secret
        secret = core.read_namespaced_secret(f"{NAME}-loopline-token", namespace)
        return base64.b64decode(secret.data[auth.SECRET_KEY]).decode()

    def digest() -> str:
        env = _deployment(kube_api, namespace).spec.template.spec.containers[0].env
        return str(next(e.value for e in env if e.name == DIGEST_ENV))

    backend.apply(_desired(namespace, replicas=1))
    first = token()
    assert digest() == auth.fingerprint(first)
    env = _deployment(kube_api, namespace).spec.template.spec.containers[0].env
    by_ref = next(e for e in env if e.name == auth.TOKEN_ENV)
    assert by_ref.value is None
    assert by_ref.value_from.secret_key_ref.name == f"{NAME}-loopline-token"
    _wait_ready(backend, cluster, namespace)
    generation = _deployment(kube_api, namespace).metadata.generation

    backend.apply(_desired(namespace, replicas=1))  # kept: same token, same pods
    assert token() == first
    assert _deployment(kube_api, namespace).metadata.generation == generation

    core.delete_namespaced_secret(f"{NAME}-loopline-token", namespace)  # rotate
    backend.apply(_desired(namespace, replicas=1))
    rotated = token()
    assert rotated != first
    assert digest() == auth.fingerprint(rotated)
    assert _deployment(kube_api, namespace).metadata.generation == generation + 1
    _wait_ready(backend, cluster, namespace)


def test_delete_leaves_nothing_and_forget_drops_the_token(
    backend: KubernetesServingBackend,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    backend.apply(_desired(namespace, replicas=1))
    _wait_ready(backend, cluster, namespace)
    core = k8s.CoreV1Api(kube_api)
    backend.delete(namespace, NAME)
    assert backend.observe(namespace, NAME) is None
    apps = k8s.AppsV1Api(kube_api)
    assert not apps.list_namespaced_deployment(namespace, label_selector=SELECTOR).items
    assert not core.list_namespaced_service(namespace, label_selector=SELECTOR).items
    wait_for(
        lambda: not _pods(kube_api, namespace),
        timeout=90,
        what="the server pods garbage-collected",
    )
    core.read_namespaced_secret(f"{NAME}-loopline-token", namespace)  # kept: scaled to zero
    backend.delete(namespace, NAME)  # deleting twice is not an error
    backend.forget(namespace, NAME)
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret(f"{NAME}-loopline-token", namespace)
    assert info.value.status == 404


def test_a_model_name_too_long_for_a_service_is_rejected(
    backend: KubernetesServingBackend, namespace: str
) -> None:
    from loopline.operators.errors import BackendRejected

    with pytest.raises(BackendRejected, match="at most 56 characters"):
        backend.apply(_desired(namespace, name="m" * 60))


@pytest.mark.usefixtures("loopline_crds")
@pytest.mark.parametrize(
    ("resources", "words"),
    [
        (
            {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}},
            "serving.resources.requests.cpu must not exceed serving.resources.limits.cpu",
        ),
        (
            {"requests": {"memory": "1.5Gi"}, "limits": {"memory": "1G"}},
            "serving.resources.requests.memory must not exceed serving.resources.limits.memory",
        ),
        ({"limits": {"memory": "128m"}}, "spec.serving.resources.limits.memory"),
    ],
)
def test_the_api_server_refuses_resources_that_cannot_work(
    kube_api: k8s.ApiClient, namespace: str, resources: dict[str, Any], words: str
) -> None:
    """The CRD's CEL rule compares quantities as Kubernetes does (1.5Gi is more than 1G)."""
    from loopline.types.common import GROUP, VERSION

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Model",
        "metadata": {"name": NAME},
        "spec": {
            "task": "anomaly-detection",
            "pipelineRef": {"name": "training"},
            "serving": {"resources": resources},
        },
    }
    custom = k8s.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "models", body)
    assert info.value.status == 422
    assert words in str(info.value.body)
    fine = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    body["spec"]["serving"]["resources"] = fine  # type: ignore[index]
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "models", body)
    assert created["spec"]["serving"]["resources"] == fine


def test_the_operator_service_account_may_do_all_of_it(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    """The backend as the operator's ServiceAccount with manifests/rbac/operator.yaml: every
    call it makes is allowed (a missing verb would be a 403), and it may not read Secrets."""
    import subprocess

    import yaml
    from kubernetes import config as k8s_config

    from loopline.cluster.versions import REPO_ROOT

    def kubectl(*args: str) -> str:
        done = subprocess.run(
            [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 or args[:2] == ("auth", "can-i"), done.stderr
        return done.stdout.strip()

    kubectl("apply", "-f", str(REPO_ROOT / "manifests" / "rbac" / "operator.yaml"))
    sa = "system:serviceaccount:loopline-system:loopline-operator"
    for verb, what in (("get", "secrets"), ("list", "secrets"), ("update", "deployments.apps")):
        assert kubectl("auth", "can-i", verb, what, "-n", namespace, f"--as={sa}") == "no"
    token = kubectl("create", "token", "loopline-operator", "-n", "loopline-system")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        **admin,
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    api = k8s_config.new_client_from_config_dict(config)
    serving = KubernetesServingBackend(
        OperatorSettings(runtime_image=IMAGE), tracking_uri="http://mlflow", api=api
    )
    try:
        serving.apply(_desired(namespace, replicas=1))
        _wait_ready(serving, cluster, namespace)
        serving.apply(_desired(namespace, replicas=1, canary_version="2", canary_weight=50))
        _wait_ready(serving, cluster, namespace, weight=50)
        serving.delete(namespace, NAME)
        serving.forget(namespace, NAME)
    finally:
        api.close()
    assert not k8s.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
