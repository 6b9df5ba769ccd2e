"""The `seldon` backend reads a canary's traffic from the Model's Server pods, on the real API
server with Seldon Core 2's CRDs and kwok pods.

No Seldon controller runs here: the test writes the Seldon Models' Ready conditions itself and
creates the Server's pods as Seldon's controller labels them (`seldon-server-name`). kwok
marks the pods Running and Ready with an IP, but nothing runs in them, so nothing listens on
their metrics port: the one seam is the pod -> metrics URL lookup (`metrics_url`), which sends
each pod's scrape to a small real HTTP server on loopback answering that pod's `/metrics` text.
The listing of the pods, their readiness, the HTTP scrape, the step windows and the decision
are all real. The MLflow storage-URI lookup is a function returning an s3 URI.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest

from loopline.operators.backends.seldon import SeldonServingBackend
from loopline.operators.builders.canary import CanaryAction, decide_canary
from loopline.operators.builders.serving import ServingDesired
from loopline.operators.settings import OperatorSettings
from loopline.serving.metrics import ServingMetrics
from loopline.types.model import CanarySpec
from tests.fixtures.cluster import ClusterHandle, wait_for

SELDON_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "seldon-core-v2"
GROUP, VERSION = "mlops.seldon.io", "v1alpha1"


@pytest.fixture(scope="module")
def seldon_crds(cluster: ClusterHandle) -> list[str]:
    return list(cluster.install_crds(SELDON_CRDS))


class PodMetrics:
    """What each pod's MLServer metrics port would answer: `/<pod>/metrics`."""

    def __init__(self) -> None:
        self.registries: dict[str, CollectorRegistry] = {}
        self.metrics: dict[str, ServingMetrics] = {}
        self.scraped: list[str] = []

    def of(self, pod: str) -> ServingMetrics:
        if pod not in self.metrics:
            self.registries[pod] = CollectorRegistry()
            self.metrics[pod] = ServingMetrics(self.registries[pod])
        return self.metrics[pod]

    def serve(self, pod: str, version: str, requests: int, errors: int = 0) -> None:
        m = self.of(pod)
        m.requests.labels("drill-ae", version, "rest", "ok").inc(requests - errors)
        if errors:
            m.requests.labels("drill-ae", version, "rest", "server_error").inc(errors)
        m.rows.labels("drill-ae", version).inc(requests - errors)

    def text(self, pod: str) -> str | None:
        registry = self.registries.get(pod)
        return None if registry is None else generate_latest(registry).decode()


@pytest.fixture
def pod_metrics() -> Iterator[tuple[PodMetrics, str]]:
    state = PodMetrics()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            pod = self.path.strip("/").split("/")[0]
            state.scraped.append(pod)
            text = state.text(pod)
            data = (text or "no such pod\n").encode()
            self.send_response(200 if text is not None else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _server_pod(name: str, server: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name, labels={"seldon-server-name": server, "app": "seldon-server"}
        ),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="mlserver", image="loopline-runtime:test")],
            automount_service_account_token=False,
        ),
    )


def _running_with_ip(core: k8s.CoreV1Api, namespace: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, namespace)
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return bool(pod.status.phase == "Running" and pod.status.pod_ip and ready)


def _set_ready(api: k8s.ApiClient, namespace: str, name: str) -> None:
    condition = {"type": "Ready", "status": "True", "reason": "", "message": ""}
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "models", name, {"status": {"conditions": [condition]}}
    )


def _server_env(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    server = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "servers", "drill-ae-server"
    )
    return {
        e["name"]: e.get("value", "") for e in server["spec"]["podSpec"]["containers"][0]["env"]
    }


@pytest.mark.usefixtures("seldon_crds")
def test_a_canary_is_judged_on_its_server_pods_metrics(
    kube_api: k8s.ApiClient, namespace: str, pod_metrics: tuple[PodMetrics, str]
) -> None:
    metrics, base = pod_metrics
    seen_pods: list[k8s.V1Pod] = []

    def metrics_url(pod: k8s.V1Pod) -> str:
        seen_pods.append(pod)
        return f"{base}/{pod.metadata.name}/metrics"

    backend = SeldonServingBackend(
        OperatorSettings(
            seldon_image="loopline-runtime:test",
            cluster_tracking_uri="http://mlflow.loopline-system:5000",
        ),
        api=kube_api,
        storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}/artifacts/model",
        tracking_uri="http://127.0.0.1:5000",
        metrics_url=metrics_url,
    )
    desired = ServingDesired(
        namespace=namespace,
        name="drill-ae",
        registered_model=f"{namespace}.drill-ae",
        champion_version="1",
        canary_version="2",
        canary_weight=10,
        monitor_url=f"http://drill-ae-monitor.{namespace}:8080",
    )
    backend.apply(desired)
    env = _server_env(kube_api, namespace)
    assert env["LOOPLINE_SERVING_MONITOR_URL"] == desired.monitor_url
    assert env["LOOPLINE_SERVING_TRACKING_URI"] == "http://mlflow.loopline-system:5000"
    for version in ("1", "2"):
        _set_ready(kube_api, namespace, f"drill-ae-v{version}")

    core = k8s.CoreV1Api(kube_api)
    for name, server in (("server-0", "drill-ae-server"), ("server-1", "drill-ae-server")):
        core.create_namespaced_pod(namespace, _server_pod(name, server))
    core.create_namespaced_pod(namespace, _server_pod("other-0", "other-server"))
    for name in ("server-0", "server-1", "other-0"):

        def running(name: str = name) -> bool:
            return _running_with_ip(core, namespace, name)

        wait_for(running, timeout=60, what=f"kwok to run pod {name}")
    for pod in ("server-0", "server-1", "other-0"):
        metrics.serve(pod, "1", 10)

    first = backend.observe(namespace, "drill-ae")
    assert first is not None
    assert first.ready
    assert first.canary_stats is not None
    assert first.canary_stats.requests == 0  # the step's first reading is its baseline
    assert sorted(metrics.scraped) == ["server-0", "server-1"]
    assert all(p.status.pod_ip for p in seen_pods)

    metrics.serve("server-0", "1", 100)
    metrics.serve("server-0", "2", 20, errors=2)
    metrics.serve("server-1", "2", 20, errors=2)
    metrics.serve("other-0", "2", 500, errors=500)  # another Model's Server: not read
    second = backend.observe(namespace, "drill-ae")
    assert second is not None
    assert second.champion_stats is not None
    assert second.canary_stats is not None
    assert second.champion_stats.requests == 100
    assert (second.canary_stats.requests, second.canary_stats.server_errors) == (40, 4)
    spec = CanarySpec.model_validate({"abortMetric": "error_rate", "abortThreshold": 0.05})
    verdict = decide_canary(
        spec,
        step_index=0,
        step_elapsed_s=1,
        champion=second.champion_stats,
        canary=second.canary_stats,
    )
    assert verdict.action == CanaryAction.ROLLBACK

    # The next step (50%) starts a new window; a pod that went away drops out of the sum.
    backend.apply(
        ServingDesired(
            namespace=namespace,
            name="drill-ae",
            registered_model=f"{namespace}.drill-ae",
            champion_version="1",
            canary_version="2",
            canary_weight=50,
        )
    )
    baseline = backend.observe(namespace, "drill-ae")
    assert baseline is not None
    assert baseline.canary_stats is not None
    assert baseline.canary_stats.requests == 0
    core.delete_namespaced_pod("server-1", namespace, grace_period_seconds=0)
    wait_for(
        lambda: (
            not any(
                p.metadata.name == "server-1"
                for p in core.list_namespaced_pod(namespace).items
                if p.metadata.deletion_timestamp is None
            )
        ),
        what="pod server-1 to go",
    )
    metrics.serve("server-0", "2", 25)
    metrics.serve("server-1", "2", 1000)
    third = backend.observe(namespace, "drill-ae")
    assert third is not None
    assert third.canary_stats is not None
    assert third.canary_stats.requests == 25

    # Promoted: no canary, no traffic read.
    backend.apply(
        ServingDesired(
            namespace=namespace,
            name="drill-ae",
            registered_model=f"{namespace}.drill-ae",
            champion_version="2",
        )
    )
    metrics.scraped.clear()
    after = backend.observe(namespace, "drill-ae")
    assert after is not None
    assert after.canary_stats is None
    assert metrics.scraped == []
    backend.delete(namespace, "drill-ae")
