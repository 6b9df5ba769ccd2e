"""Canary decisions of the kubernetes serving backend, fed from two pods' real /metrics.

The cluster cannot run in this tier, so the backend talks to an in-memory stand-in for
`KubeObjects` (it holds the Deployment and the two pods as the API server returns them);
everything else is real: each pod's metrics are served over HTTP on loopback (the pod's IP and
its container's `metrics` port), scraped by the backend, windowed per step, summed over the
pods and judged by `decide_canary`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loopline.operators.backends.kube_serving import KubernetesServingBackend
from loopline.operators.builders.canary import CanaryAction, decide_canary
from loopline.operators.builders.kube_serving import REVISION_LABEL, build_deployment
from loopline.operators.builders.serving import ServingDesired
from loopline.operators.settings import OperatorSettings
from loopline.types.model import CanarySpec


class MetricsPod:
    """One pod's /metrics: loopline_inference_requests_total of champion 3 and canary 4."""

    def __init__(self) -> None:
        self.counts = {("3", "ok"): 0, ("4", "ok"): 0, ("4", "server_error"): 0}
        pod = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pod.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        lines = ["# TYPE loopline_inference_requests_total counter"]
        for (version, outcome), n in self.counts.items():
            lines.append(
                f'loopline_inference_requests_total{{model="drill-ae",version="{version}",'
                f'outcome="{outcome}"}} {n}'
            )
        return "\n".join(lines) + "\n"

    def serve(self, champion: int, canary: int, canary_errors: int = 0) -> None:
        self.counts[("3", "ok")] += champion
        self.counts[("4", "ok")] += canary - canary_errors
        self.counts[("4", "server_error")] += canary_errors


class InMemoryObjects:
    """The Deployment and pods of one Model, as the API server would list them."""

    def __init__(self, deployment: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.deployment = deployment
        self.pods = pods

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (kind, name) == ("Deployment", "drill-ae-server")
        return self.deployment

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        assert kind == "Pod"
        assert label_selector == "loopline.dev/model=drill-ae,loopline.dev/component=server"
        return self.pods


def _deployment(weight: int) -> dict[str, Any]:
    desired = ServingDesired(
        namespace="plant",
        name="drill-ae",
        registered_model="plant.drill-ae",
        champion_version="3",
        canary_version="4",
        canary_weight=weight,
        replicas=2,
    )
    obj = build_deployment(desired, image="img", tracking_uri="http://mlflow", digest="d")
    obj["metadata"]["generation"] = 1
    obj["status"] = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
    }
    return obj


def _pod(name: str, revision: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "plant", "labels": {REVISION_LABEL: revision}},
        "spec": {
            "containers": [
                {"name": "server", "ports": [{"name": "metrics", "containerPort": port}]}
            ]
        },
        "status": {
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "server", "ready": True, "state": {"running": {}}}],
        },
    }


@pytest.fixture
def pods() -> Iterator[tuple[MetricsPod, MetricsPod]]:
    a, b = MetricsPod(), MetricsPod()
    yield a, b
    for pod in (a, b):
        pod.server.shutdown()
        pod.server.server_close()


def _backend(
    weight: int, a: MetricsPod, b: MetricsPod, without_metrics: str = "hold"
) -> tuple[KubernetesServingBackend, InMemoryObjects]:
    backend = KubernetesServingBackend(
        OperatorSettings(runtime_image="img", canary_without_metrics=without_metrics),
        tracking_uri="http://mlflow",
        api=object(),  # type: ignore[arg-type]
    )
    deployment = _deployment(weight)
    revision = deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL]
    objects = InMemoryObjects(
        deployment, [_pod("a", revision, a.port), _pod("b", revision, b.port)]
    )
    backend.objects = objects  # type: ignore[assignment]
    return backend, objects


def test_errors_of_the_canary_on_one_pod_roll_it_back(pods: tuple[MetricsPod, MetricsPod]) -> None:
    a, b = pods
    a.serve(champion=500, canary=50)  # traffic before the step: not part of its window
    backend, _ = _backend(10, a, b)
    first = backend.observe("plant", "drill-ae")
    assert first is not None
    assert first.ready
    assert first.canary_stats is not None
    assert first.canary_stats.requests == 0
    a.serve(champion=450, canary=50, canary_errors=10)
    b.serve(champion=450, canary=50)
    observed = backend.observe("plant", "drill-ae")
    assert observed is not None
    assert observed.champion_stats is not None
    assert observed.canary_stats is not None
    assert observed.champion_stats.requests == 900  # both pods, this step only
    assert observed.canary_stats.requests == 100
    assert observed.canary_stats.server_errors == 10
    decision = decide_canary(
        CanarySpec(),
        step_index=0,
        step_elapsed_s=5,
        champion=observed.champion_stats,
        canary=observed.canary_stats,
    )
    assert decision.action == CanaryAction.ROLLBACK
    assert "error_rate 0.1 > abortThreshold 0.05 at 10%" in decision.reason


def test_a_healthy_canary_steps_after_its_time(pods: tuple[MetricsPod, MetricsPod]) -> None:
    a, b = pods
    backend, _ = _backend(10, a, b)
    backend.observe("plant", "drill-ae")
    a.serve(champion=90, canary=15)
    b.serve(champion=90, canary=15)
    observed = backend.observe("plant", "drill-ae")
    assert observed is not None
    assert observed.canary_stats is not None
    assert observed.champion_stats is not None
    judge = {"champion": observed.champion_stats, "canary": observed.canary_stats}
    early = decide_canary(CanarySpec(), step_index=0, step_elapsed_s=5, **judge)
    assert early.action == CanaryAction.HOLD
    assert decide_canary(CanarySpec(), step_index=0, step_elapsed_s=61, **judge).action == (
        CanaryAction.STEP
    )


def test_a_new_step_starts_a_new_window(pods: tuple[MetricsPod, MetricsPod]) -> None:
    a, b = pods
    backend, objects = _backend(10, a, b)
    backend.observe("plant", "drill-ae")
    a.serve(champion=100, canary=30, canary_errors=30)
    assert backend.observe("plant", "drill-ae").canary_stats.server_errors == 30  # type: ignore[union-attr]
    step = _deployment(50)  # the next weight: a new template, new pods
    revision = step["spec"]["template"]["metadata"]["labels"][REVISION_LABEL]
    objects.deployment = step
    objects.pods = [_pod("a2", revision, a.port), _pod("b2", revision, b.port)]
    observed = backend.observe("plant", "drill-ae")
    assert observed is not None
    assert observed.canary_weight == 50
    assert observed.canary_stats is not None
    assert observed.canary_stats.requests == 0


def test_unreadable_pods_hold_the_step_and_say_why(pods: tuple[MetricsPod, MetricsPod]) -> None:
    """No pod's metrics read: empty stats, which `decide_canary` holds on however long the step
    has stood, and the status message names the pods and the port."""
    a, b = pods
    backend, _objects = _backend(10, a, b)
    for pod in (a, b):
        pod.server.shutdown()
        pod.server.server_close()
    observed = backend.observe("plant", "drill-ae")
    assert observed is not None
    assert observed.ready
    assert observed.canary_stats is not None
    assert observed.champion_stats is not None
    assert observed.canary_stats.requests == 0
    assert "canary held: no metrics read from 2 ready pod(s)" in observed.message
    judge = {"champion": observed.champion_stats, "canary": observed.canary_stats}
    late = decide_canary(CanarySpec(), step_index=0, step_elapsed_s=3600, **judge)
    assert late.action == CanaryAction.HOLD


def test_unreadable_pods_pass_on_time_when_told_to(pods: tuple[MetricsPod, MetricsPod]) -> None:
    """`canary_without_metrics: time`: no stats at all, so the rollout passes the step after
    stepSeconds (the operator's time rule)."""
    a, b = pods
    backend, _objects = _backend(10, a, b, without_metrics="time")
    for pod in (a, b):
        pod.server.shutdown()
        pod.server.server_close()
    observed = backend.observe("plant", "drill-ae")
    assert observed is not None
    assert observed.ready
    assert observed.canary_stats is None
    assert observed.champion_stats is None
