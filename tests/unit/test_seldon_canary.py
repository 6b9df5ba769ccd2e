"""A Seldon canary judged on its metrics, from the Server pods' /metrics texts to the rollout.

Each pod's text is the real exposition of the runtime's metric definitions
(`loopline.serving.metrics.ServingMetrics` in a fresh registry), labelled as the runtime labels
them under Seldon. The chain is the backend's: ready pods -> their metrics (StepWindows over
the step) -> `ServingObserved` with both versions' traffic -> the Model builder's rollout
(`reconcile_model`, which calls `decide_canary`). Two things are replaced, because no
cluster runs in unit tests: listing the Server's pods (V1Pod objects built here) and the HTTP
GET of each pod's metrics (a lookup of the pod's current text); the backend's listing and a
real scrape are covered by tests/integration/test_operator_seldon_canary.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest

from loopline.operators.backends.seldon_status import observed_of, with_traffic
from loopline.operators.backends.seldon_traffic import (
    SeldonTraffic,
    pod_metrics_url,
    pod_ready,
    ready_pod_urls,
)
from loopline.operators.builders.model import ModelObservation, ModelPlan, reconcile_model
from loopline.operators.builders.runs import RunContext
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.serving.metrics import ServingMetrics
from loopline.types.common import RETRAIN_ANNOTATION
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.runs import RunPhase, TrainingRunResult
from loopline.types.status import ModelStatus, RolloutOutcome

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CTX = RunContext(mlflow_tracking_uri="sqlite:///m.db", feature_repo="feature_repo")
PIPE = PipelineSpec.model_validate({"pipeline": "training", "parameters": {"epochs": 1}})
NOTES = {RETRAIN_ANNOTATION: "r1"}


class PodCounters:
    """One Server pod's `loopline_*` series, as the runtime counts requests in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)

    def serve(
        self,
        version: str,
        requests: int,
        *,
        errors: int = 0,
        latency_s: float = 0.004,
        anomalous: int = 0,
        model: str = "drill-ae",
    ) -> None:
        m = self.metrics
        ok = requests - errors
        m.requests.labels(model, version, "rest", "ok").inc(ok)
        if errors:
            m.requests.labels(model, version, "rest", "server_error").inc(errors)
        m.rows.labels(model, version).inc(ok)
        if anomalous:
            m.anomaly_rows.labels(model, version).inc(anomalous)
        for _ in range(ok):
            m.latency.labels(model, version, "rest").observe(latency_s)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def pod(name: str, ip: str, *, ready: bool = True, phase: str = "Running") -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels={"seldon-server-name": "drill-ae-server"}),
        status=k8s.V1PodStatus(
            phase=phase,
            pod_ip=ip,
            conditions=[k8s.V1PodCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


class Cluster:
    """The Server's pods and what each one's metrics port answers now."""

    def __init__(self, pods: dict[str, PodCounters]) -> None:
        self.counters = pods
        self.pods = [pod(name, f"10.0.0.{i + 1}") for i, name in enumerate(pods)]
        self.listed: list[tuple[str, str]] = []
        self.unreadable: set[str] = set()

    def list_pods(self, namespace: str, selector: str) -> list[k8s.V1Pod]:
        self.listed.append((namespace, selector))
        return self.pods

    def fetch(self, urls: Mapping[str, str]) -> dict[str, str]:
        by_url = {pod_metrics_url(p): p.metadata.name for p in self.pods}
        return {
            name: self.counters[by_url[url]].text()
            for name, url in urls.items()
            if by_url[url] not in self.unreadable
        }


def seldon_model(version: str, ready: bool = True) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {
        "metadata": {
            "name": f"drill-ae-v{version}",
            "labels": {"loopline.dev/model": "drill-ae", "loopline.dev/version": version},
        },
        "status": {"conditions": [condition]},
    }


def spec(**canary: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "task": "anomaly-detection",
            "pipelineRef": {"name": "training"},
            "serving": {"canary": {"steps": [10, 50, 100], "stepSeconds": 60, **canary}},
        }
    )


def obs(
    status: ModelStatus,
    model_spec: ModelSpec,
    *,
    run: TrainingRunResult | None = None,
    serving: ServingObserved | None = None,
    now: datetime = T0,
    annotations: Mapping[str, str] = NOTES,
) -> ModelObservation:
    return ModelObservation(
        namespace="plant",
        name="drill-ae",
        uid="uid-1",
        generation=1,
        annotations=annotations,
        spec=model_spec,
        status=status,
        pipeline=PIPE,
        pipeline_message="",
        run=run,
        serving=serving,
        now=now,
    )


def done(plan: ModelPlan, version: str) -> TrainingRunResult:
    assert plan.status.current_run is not None
    return TrainingRunResult.model_validate(
        {
            "runId": plan.status.current_run.run_id,
            "phase": RunPhase.SUCCEEDED,
            "modelVersion": version,
            "promoted": True,
        }
    )


def canary_started(model_spec: ModelSpec) -> ModelPlan:
    """Version 1 serves; a retraining request registers version 2, whose canary starts at
    10% at T0 (the builder's own path to a canary)."""
    first = reconcile_model(obs(ModelStatus(), model_spec, annotations={}), CTX)
    plan = reconcile_model(obs(first.status, model_spec, run=done(first, "1"), annotations={}), CTX)
    up = ServingObserved(ready=True, champion_version="1", endpoints={"rest": "http://x"})
    plan = reconcile_model(obs(plan.status, model_spec, serving=up, annotations={}), CTX)
    plan = reconcile_model(obs(plan.status, model_spec), CTX)  # the retraining run starts
    plan = reconcile_model(obs(plan.status, model_spec, run=done(plan, "2")), CTX)
    assert plan.status.rollout is not None
    assert (plan.status.rollout.version, plan.status.rollout.weight) == ("2", 10)
    return plan


class Rollout:
    """One Model's canary as the operator drives it: read the Seldon backend's observation
    (Seldon Models + the pods' metrics), hand it to the builder, apply the weight it wants."""

    def __init__(self, model_spec: ModelSpec, cluster: Cluster) -> None:
        self.spec = model_spec
        self.cluster = cluster
        self.traffic = SeldonTraffic(cluster.list_pods, fetch=cluster.fetch)
        self.plan = canary_started(model_spec)

    def observed(self) -> ServingObserved:
        rollout = self.plan.status.rollout
        assert rollout is not None
        desired = ServingDesired(
            namespace="plant",
            name="drill-ae",
            registered_model="plant.drill-ae",
            champion_version="1",
            canary_version=rollout.version,
            canary_weight=rollout.weight,
        )
        found = {m["metadata"]["name"]: m for m in (seldon_model("1"), seldon_model("2"))}
        observed = observed_of("plant", desired, found)
        traffic = self.traffic.read(
            desired.key,
            "plant",
            "drill-ae-server",
            model="drill-ae",
            champion_version="1",
            canary_version=rollout.version,
            canary_weight=rollout.weight,
        )
        return with_traffic(observed, traffic)

    def reconcile(self, seconds: float) -> ModelPlan:
        serving = self.observed()
        self.plan = reconcile_model(
            obs(self.plan.status, self.spec, serving=serving, now=T0 + timedelta(seconds=seconds)),
            CTX,
        )
        return self.plan


def aborted(plan: ModelPlan) -> list[str]:
    return [e.message for e in plan.events if e.reason == "CanaryAborted"]


def test_only_ready_running_pods_with_an_ip_are_read() -> None:
    deleting = pod("d", "10.0.0.9")
    deleting.metadata.deletion_timestamp = T0
    pods = [
        pod("a", "10.0.0.1"),
        pod("b", "10.0.0.2", ready=False),
        pod("c", "", phase="Running"),
        pod("p", "10.0.0.4", phase="Pending"),
        deleting,
    ]
    assert [p.metadata.name for p in pods if pod_ready(p)] == ["a"]
    assert ready_pod_urls(pods, pod_metrics_url) == {"a": "http://10.0.0.1:8082/metrics"}


def test_a_healthy_canary_steps_after_its_time_and_is_promoted_at_100() -> None:
    """Enough canary requests within budget: each step lasts stepSeconds, then the next one;
    after 100% the canary is champion. The pods' counters of both versions are summed."""
    a, b = PodCounters(), PodCounters()
    cluster = Cluster({"server-0": a, "server-1": b})
    rollout = Rollout(spec(), cluster)
    assert rollout.reconcile(0).status.rollout is not None  # the step's first reading
    assert cluster.listed[-1] == ("plant", "seldon-server-name=drill-ae-server")
    a.serve("1", 100)
    a.serve("2", 15)
    b.serve("2", 15)
    seen = rollout.observed()
    assert seen.canary_stats is not None
    assert seen.champion_stats is not None
    assert (seen.champion_stats.requests, seen.canary_stats.requests) == (100, 30)
    plan = rollout.reconcile(61)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 50
    rollout.reconcile(61)  # the new step's baseline: counters before it do not count
    a.serve("2", 25)
    assert rollout.reconcile(90).status.rollout.weight == 50
    plan = rollout.reconcile(125)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 100
    rollout.reconcile(125)
    b.serve("2", 40)
    plan = rollout.reconcile(190)
    assert plan.status.rollout is None
    assert plan.status.champion is not None
    assert plan.status.champion.version == "2"
    assert "Promoted" in [e.reason for e in plan.events]


def test_too_few_canary_requests_hold_the_step_however_long_it_lasted() -> None:
    a = PodCounters()
    rollout = Rollout(spec(), Cluster({"server-0": a}))
    rollout.reconcile(0)
    a.serve("1", 500)
    a.serve("2", 19)
    plan = rollout.reconcile(3600)
    assert plan.status.rollout is not None
    assert (plan.status.rollout.weight, plan.status.rollout.step_index) == (10, 0)


def test_a_step_that_has_not_lasted_holds_with_enough_requests() -> None:
    a = PodCounters()
    rollout = Rollout(spec(), Cluster({"server-0": a}))
    rollout.reconcile(0)
    a.serve("2", 200)
    plan = rollout.reconcile(59)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 10


def test_unreadable_pods_hold_the_canary_instead_of_promoting_it_on_time() -> None:
    """Without traffic numbers the builder would step on time alone; the backend reports an
    empty window instead, so the abort metric is never skipped."""
    a = PodCounters()
    cluster = Cluster({"server-0": a})
    rollout = Rollout(spec(), cluster)
    cluster.unreadable.add("server-0")
    seen = rollout.observed()
    assert seen.canary_stats is not None
    assert seen.canary_stats.requests == 0
    assert "canary held: no metrics read from 1 ready pod(s)" in seen.message
    a.serve("2", 100)
    plan = rollout.reconcile(3600)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 10


@pytest.mark.parametrize(
    ("canary_spec", "champion", "canary", "needle"),
    [
        (
            {"abortMetric": "error_rate", "abortThreshold": 0.05},
            {"requests": 100},
            {"requests": 40, "errors": 4},
            "error_rate 0.1 > abortThreshold 0.05 at 10%",
        ),
        (
            {"abortMetric": "latency_p95_seconds", "abortThreshold": 0.05},
            {"requests": 100, "latency_s": 0.004},
            {"requests": 40, "latency_s": 0.2},
            "latency_p95_seconds 0.25 > abortThreshold 0.05 at 10%",
        ),
        (
            {"abortMetric": "anomaly_rate_delta", "abortThreshold": 0.1},
            {"requests": 100, "anomalous": 2},
            {"requests": 40, "anomalous": 20},
            "anomaly_rate_delta 0.48 > abortThreshold 0.1 at 10%",
        ),
    ],
)
def test_a_canary_over_its_budget_is_rolled_back_before_its_step_ends(
    canary_spec: dict[str, Any],
    champion: dict[str, Any],
    canary: dict[str, Any],
    needle: str,
) -> None:
    a, b = PodCounters(), PodCounters()
    rollout = Rollout(spec(**canary_spec), Cluster({"server-0": a, "server-1": b}))
    rollout.reconcile(0)
    a.serve("1", **champion)
    half: dict[str, Any] = {k: v // 2 if isinstance(v, int) else v for k, v in canary.items()}
    a.serve("2", **half)
    b.serve("2", **half)
    plan = rollout.reconcile(5)
    assert plan.status.rollout is None
    assert any(needle in m for m in aborted(plan)), aborted(plan)
    last = plan.status.runs[0].rollout_result
    assert last is not None
    assert last.outcome == RolloutOutcome.ROLLED_BACK
    assert plan.status.champion is not None
    assert plan.status.champion.version == "1"


def test_traffic_before_the_step_and_of_other_models_is_not_counted() -> None:
    """Errors the canary made before the current step, and another Model's series on the
    same pod, leave the step's numbers alone."""
    a = PodCounters()
    a.serve("2", 50, errors=50)  # before the step's first reading
    a.serve("2", 50, errors=50, model="other")
    rollout = Rollout(spec(), Cluster({"server-0": a}))
    rollout.reconcile(0)
    a.serve("2", 30)
    a.serve("2", 30, errors=30, model="other")
    plan = rollout.reconcile(61)
    assert not aborted(plan)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 50
