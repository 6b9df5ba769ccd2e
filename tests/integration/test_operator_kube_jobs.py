"""The operator with the `kubernetes` pipeline backend: a Model's training run is a Job.

The operator runs in-process against the session cluster (kwok node: nothing executes, see
test_kube_jobs.py). The run's pod stays unscheduled because the namespace lacks the Feast
repository's claim; the Model shows why while Training, and when the test writes a failed
container with the runner's result into the pod's status, as the kubelet would, the Model
fails with the runner's message. One Job per run throughout, also across an operator restart.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from loopline.operators.backends.kube_jobs import FEATURE_REPO_CLAIM
from loopline.types.runs import RunPhase, TrainingRunResult
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest
from tests.integration.test_kube_jobs import end_pod

pytestmark = pytest.mark.usefixtures("loopline_crds")


def _jobs(h: OperatorHarness) -> list[str]:
    found = k8s.BatchV1Api(h.api).list_namespaced_job(
        h.namespace, label_selector="loopline.dev/model=drill-ae"
    )
    return [job.metadata.name for job in found.items]


def _pending_on_claim(h: OperatorHarness) -> dict[str, Any] | None:
    status = h.status("drill-ae")
    message = (status.get("currentRun") or {}).get("message") or ""
    return status if FEATURE_REPO_CLAIM in message else None


def test_training_job_reports_pending_reason_and_failure_to_the_model(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_OPERATOR_PIPELINE_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_OPERATOR_TRAINING_IMAGE", "loopline/training:0.1.0")
    monkeypatch.setenv("LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI", "http://mlflow.invalid:5000")
    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running():
        h.wait_phase("drill-ae", "Training", timeout=30)
        (run_id,) = wait_for(lambda: _jobs(h), timeout=30, what="the training Job")
        status = wait_for(
            lambda: _pending_on_claim(h),
            timeout=30,
            what="the pending reason in the Model's status",
        )
        assert status["currentRun"]["runId"] == run_id
    with h.running():  # a restarted operator adopts the Job
        h.wait_phase("drill-ae", "Training", timeout=30)
        failure = TrainingRunResult(
            run_id=run_id,
            phase=RunPhase.FAILED,
            step="validate-data",
            message="data quality gate failed: completeness 0.80 < 0.95",
        )
        end_pod(h.api, h.namespace, run_id, 1, failure.model_dump_json(by_alias=True))
        status = h.wait_phase("drill-ae", "Failed", timeout=60)
    assert "completeness 0.80 < 0.95" in status["message"]
    assert _jobs(h) == [run_id]
    assert any(reason == "TrainingFailed" for reason, _ in h.events("drill-ae"))
