"""The operator serving a Model with the `kubernetes` serving backend (no Seldon, no local
processes): the first version is served by a Deployment whose pods kwok runs, the status shows
the Service's URLs, a retrained version walks its canary steps as rolling updates of the same
Deployment and is promoted, and deleting the Model leaves no Deployment, Service or Secret.

Training is the test worker of tests/fixtures/operator.py (it registers a version without
artifacts): what is tested is the serving. Pods do not execute under kwok, so no traffic is
read: the operator is told to pass each canary step on time alone (stepSeconds,
`canary_without_metrics: time`) instead of holding it, its default. The canary judged on real
pods' metrics is tested on the real node (tests/realnode/test_serving_on_node.py).
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

RETRAIN = "loopline.dev/retrain"
SELECTOR = "loopline.dev/model=drill-ae,loopline.dev/component=server"


def _weights(h: OperatorHarness) -> list[str]:
    """--canary-weight of the Deployment's template, or '-' without a canary."""
    deployment = k8s.AppsV1Api(h.api).read_namespaced_deployment("drill-ae-server", h.namespace)
    args = deployment.spec.template.spec.containers[0].args
    return [a.split("=", 1)[1] for a in args if a.startswith("--canary-weight=")] or ["-"]


def test_operator_serves_and_rolls_out_with_deployments(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_OPERATOR_SERVING_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_OPERATOR_CANARY_WITHOUT_METRICS", "time")  # kwok pods: none
    monkeypatch.setenv("LOOPLINE_OPERATOR_RUNTIME_IMAGE", "loopline/runtime:test")
    monkeypatch.setenv("LOOPLINE_OPERATOR_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("LOOPLINE_OPERATOR_MONITORING_BACKEND", "local")  # monitors are off
    h.create(PIPELINE)
    h.create(
        model_manifest(
            serving={
                "replicas": 1,
                "canary": {"steps": [50, 100], "stepSeconds": 2},
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            },
            monitoring={"enabled": False},
        )
    )
    apps, core = k8s.AppsV1Api(h.api), k8s.CoreV1Api(h.api)
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=90)
        assert status["champion"]["version"] == "1"
        assert status["endpoints"]["rest"] == f"http://drill-ae-server.{h.namespace}.svc:8080"
        deployment = apps.read_namespaced_deployment("drill-ae-server", h.namespace)
        container = deployment.spec.template.spec.containers[0]
        assert f"--model-uri=models:/{h.namespace}.drill-ae/1" in container.args
        assert container.resources.requests == {"cpu": "100m", "memory": "128Mi"}
        core.read_namespaced_secret("drill-ae-loopline-token", h.namespace)

        seen: set[str] = set()

        def promoted() -> bool:
            seen.add(_weights(h)[0])
            return h.status("drill-ae").get("champion", {}).get("version") == "2"

        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN: "more-data"}}})
        wait_for(promoted, timeout=120, interval=0.3, what="version 2 promoted")
        assert "0.5" in seen  # the 50% step was a pod template of its own
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
        wait_for(
            lambda: (
                _weights(h) == ["-"]
                and f"--model-uri=models:/{h.namespace}.drill-ae/2"
                in apps.read_namespaced_deployment("drill-ae-server", h.namespace)
                .spec.template.spec.containers[0]
                .args
            ),
            timeout=30,
            what="the Deployment serving version 2 alone",
        )
        reasons = [reason for reason, _ in h.events("drill-ae")]
        assert "CanaryStep" in reasons or "Promoted" in reasons

        h.custom.delete_namespaced_custom_object(
            "loopline.dev", "v1alpha1", h.namespace, "models", "drill-ae"
        )
        wait_for(lambda: h.get("drill-ae") is None, timeout=60, what="the Model to go")
    assert not apps.list_namespaced_deployment(h.namespace, label_selector=SELECTOR).items
    assert not core.list_namespaced_service(h.namespace, label_selector=SELECTOR).items
    secrets = core.list_namespaced_secret(h.namespace).items
    assert "drill-ae-loopline-token" not in {s.metadata.name for s in secrets}


def test_operator_killed_mid_canary_continues_from_its_step(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator process is killed (SIGKILL, as when its pod is deleted) while a canary
    stands at 50%: a new operator takes the rollout up where it stood (same step, same step
    start, the same Deployment), starts no second run, and promotes. kwok runs no server, so
    the steps are held on time (stepSeconds), as when no metrics can be read."""
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_OPERATOR_SERVING_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_OPERATOR_CANARY_WITHOUT_METRICS", "time")  # kwok pods: none
    monkeypatch.setenv("LOOPLINE_OPERATOR_RUNTIME_IMAGE", "loopline/runtime:test")
    monkeypatch.setenv("LOOPLINE_OPERATOR_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("LOOPLINE_OPERATOR_MONITORING_BACKEND", "local")
    h.create(PIPELINE)
    h.create(
        model_manifest(
            serving={"replicas": 1, "canary": {"steps": [50, 100], "stepSeconds": 12}},
            monitoring={"enabled": False},
        )
    )
    proc = h.start_process()
    h.wait_phase("drill-ae", "Serving", timeout=120)
    h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN: "more-data"}}})
    wait_for(
        lambda: (
            (h.status("drill-ae").get("rollout") or {}).get("weight") == 50
            and _weights(h) == ["0.5"]
        ),
        timeout=90,
        interval=0.3,
        what="the canary at 50% on the Deployment",
    )
    h.kill(proc)
    before = h.status("drill-ae")["rollout"]
    runs = h.started()
    assert len(runs) == 2  # the first version and the retrain

    proc = h.start_process()
    try:
        time.sleep(4)  # a few reconciles of the new operator, within the 12 s step
        # Held at its step, on its own clock: not restarted from the first step.
        assert h.status("drill-ae")["rollout"] == before
        wait_for(
            lambda: h.status("drill-ae").get("champion", {}).get("version") == "2",
            timeout=120,
            interval=0.3,
            what="version 2 promoted by the new operator",
        )
    finally:
        h.kill(proc)
    started = [m for r, m in h.events("drill-ae") if r == "TrainingSucceeded"]
    assert len([m for m in started if "registered version 2" in m]) == 1, started
    assert before["stepIndex"] == 0
    assert before["version"] == "2"
    assert h.started() == runs  # no second run
    assert _weights(h) == ["-"]
