"""The drift monitor's retraining request lands on a real Model object (local control plane,
Loopline's CRDs): the retraining-request annotations, written through the Kubernetes API, once
per request id even when delivered again after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from kubernetes import client as k8s

from loopline.monitoring.decision import RetrainRequest
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import MODEL_PLURAL, KubernetesRetrainRequester
from loopline.monitoring.service import DriftMonitor
from loopline.monitoring.settings import MonitorSettings
from loopline.samples import SampleBatch
from loopline.types.common import GROUP, RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION, VERSION
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "model-drill-ae.yaml"
NAMES = ["feed_rate", "spindle_speed", "spindle_current"]


def create_model(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, MODEL_PLURAL, body
    )


def get_model(api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    return k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, MODEL_PLURAL, "drill-ae"
    )


def test_request_annotates_the_model_idempotently(kube_api: k8s.ApiClient, namespace: str) -> None:
    created = create_model(kube_api, namespace)
    requester = KubernetesRetrainRequester(kube_api)
    request = RetrainRequest(
        request_id="drift-drill-ae-v3-w12",
        model="drill-ae",
        namespace=namespace,
        features=["feed_rate", "spindle_speed"],
        p_values={"feed_rate": 1e-12, "spindle_speed": 3e-9},
        window_end="2026-01-15T10:00:00+00:00",
    )
    requester.request(request)
    first = get_model(kube_api, namespace)
    requester.request(request)  # a monitor restarted before it recorded the delivery
    second = get_model(kube_api, namespace)

    ann = second["metadata"]["annotations"]
    assert ann[RETRAIN_ANNOTATION] == "drift-drill-ae-v3-w12"
    assert json.loads(ann[RETRAIN_REASON_ANNOTATION]) == {
        "trigger": "drift",
        "features": ["feed_rate", "spindle_speed"],
        "pValues": {"feed_rate": 1e-12, "spindle_speed": 3e-9},
        "windowEnd": "2026-01-15T10:00:00+00:00",
    }
    assert second["spec"] == created["spec"], "only annotations change"
    assert first["metadata"]["annotations"] == ann


def test_missing_model_is_an_error_the_monitor_retries(
    kube_api: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Drift confirmed before the Model exists: the request stays pending, then lands."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(1000, 3)), columns=NAMES)
    clock = [1_000_000.0]
    monitor = DriftMonitor(
        MonitorSettings(
            model="drill-ae",
            namespace=namespace,
            window_size=100,
            window_step=100,
            consecutive_windows=1,
            state_dir=tmp_path / "state",
        ),
        reference_source=FrameReferenceSource(reference, version="3"),
        requester=KubernetesRetrainRequester(kube_api),
        clock=lambda: clock[0],
    )
    drifted = rng.normal(size=(100, 3)) + np.array([2.0, 2.0, 0.0])
    monitor.submit(
        SampleBatch(model="drill-ae", modelVersion="3", featureNames=NAMES, rows=drifted.tolist())
    )
    monitor.process()
    assert monitor.state.pending_request is not None
    assert "Not Found" in monitor.last_error or "404" in monitor.last_error

    create_model(kube_api, namespace)
    clock[0] += 10  # past the retry delay
    monitor.process()
    assert monitor.state.pending_request is None
    ann = get_model(kube_api, namespace)["metadata"]["annotations"]
    assert ann[RETRAIN_ANNOTATION] == "drift-drill-ae-v3-w1"
    assert json.loads(ann[RETRAIN_REASON_ANNOTATION])["features"] == ["feed_rate", "spindle_speed"]
    monitor.stop()


def test_request_for_another_namespace_does_not_touch_this_one(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    create_model(kube_api, namespace)
    request = RetrainRequest(
        request_id="x",
        model="drill-ae",
        namespace="does-not-exist",
        features=[],
        p_values={},
        window_end="",
    )
    with pytest.raises(k8s.ApiException) as err:
        KubernetesRetrainRequester(kube_api).request(request)
    assert err.value.status == 404
    ann = get_model(kube_api, namespace)["metadata"].get("annotations") or {}
    assert RETRAIN_ANNOTATION not in ann


def test_operator_records_the_monitors_request_and_starts_one_run(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The monitor's request as the operator sees it: status.retraining (id, trigger drift),
    status.drift (features, p-values), one new run even when delivered twice."""
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "0.5")
    h.create(PIPELINE)
    h.create(model_manifest(monitoring={"retrainOnDrift": True}))
    rng = np.random.default_rng(1)
    reference = pd.DataFrame(rng.normal(size=(1000, 3)), columns=NAMES)
    requester = KubernetesRetrainRequester(h.api)
    monitor = DriftMonitor(
        MonitorSettings(
            model="drill-ae",
            namespace=h.namespace,
            window_size=100,
            window_step=100,
            consecutive_windows=2,
            state_dir=tmp_path / "state",
        ),
        reference_source=FrameReferenceSource(reference, version="1"),
        requester=requester,
    )
    with h.running():
        h.wait_phase("drill-ae", "Serving", timeout=60)
        runs_before = len(h.started())
        drifted = rng.normal(size=(200, 3)) + np.array([0.0, 3.0, 0.0])
        monitor.submit(
            SampleBatch(
                model="drill-ae", modelVersion="1", featureNames=NAMES, rows=drifted.tolist()
            )
        )
        monitor.process()
        request = RetrainRequest.from_dict(monitor.state.last_request or {})
        assert monitor.state.pending_request is None
        requester.request(request)  # delivered again, as after a monitor restart
        status = wait_for(
            lambda: (s := h.status("drill-ae")).get("retraining", {}).get("runId") and s,
            timeout=60,
            what="status.retraining.runId",
        )
        h.wait_phase("drill-ae", "Serving", timeout=60)
    assert status["retraining"]["requestId"] == request.request_id == "drift-drill-ae-v1-w2"
    assert status["retraining"]["trigger"] == "drift"
    assert status["drift"]["features"] == ["spindle_speed"]
    assert set(status["drift"]["pValues"]) == {"spindle_speed"}
    assert len(h.started()) == runs_before + 1
