"""The `kubernetes` pipeline backend against a real API server and the real Job controller.

kwok's fake node runs no container: nothing trains here. What a run's end looks like is
written into the pod's status by the test, as the kubelet would (phase, the container's
terminated state with the runner's result as its termination message); the Job controller
then completes or fails the Job from it, as it does for a real pod.

Two kwok behaviours shape the tests (kwok v0.7.0's default pod stages):
- a pod it manages (bound to its node) goes Running and, when a Job owns it, straight on to
  Succeeded with exit code 0 and no message (`pod-complete`): that is what
  `test_pod_kwok_completes_has_no_result` sees;
- a pod on no node is left alone. The backend's default Job mounts the Feast repository's
  claim, which these namespaces lack, so its pod stays unscheduled (which is itself what a
  missing claim looks like) and keeps exactly the status the test writes.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from loopline.operators.backends.kube_jobs import FEATURE_REPO_CLAIM, JobPipelineBackend
from loopline.operators.builders.kube_jobs import CONTAINER, model_selector, run_selector
from loopline.operators.errors import BackendRejected
from loopline.operators.settings import OperatorSettings
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.cluster import ClusterHandle, wait_for

MODEL = "drill-ae"
SETTINGS = OperatorSettings(
    pipeline_backend="kubernetes",
    training_image="loopline/training:0.1.0",
    image_pull_policy="Never",
    cluster_tracking_uri="http://mlflow.loopline-system.svc:5000",
)


def spec(namespace: str, cause: str = "first") -> TrainingRunSpec:
    """A run whose id is unique in the session cluster, as real run ids are (they hash the
    Model's uid): a restarted backend looks unknown ids up across all namespaces."""
    digest = hashlib.sha256(f"{namespace}/{cause}".encode()).hexdigest()[:12]
    return TrainingRunSpec(
        run_id=f"drill-ae-{digest}",
        namespace=namespace,
        model_name=MODEL,
        task=Task.ANOMALY_DETECTION,
        trigger=Trigger.MANUAL,
        feature_service="all_sensors",
        registered_model_name=f"{namespace}.{MODEL}",
        mlflow_tracking_uri="http://127.0.0.1:5000",
        feature_repo="/somewhere/feature_repo",
    )


def jobs(api: k8s.ApiClient, namespace: str) -> list[Any]:
    return list(
        k8s.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector=model_selector(MODEL))
        .items
    )


def pods(api: k8s.ApiClient, namespace: str, run_id: str) -> list[Any]:
    core = k8s.CoreV1Api(api)
    return list(core.list_namespaced_pod(namespace, label_selector=run_selector(run_id)).items)


def end_pod(api: k8s.ApiClient, namespace: str, run_id: str, code: int, message: str) -> None:
    """Write a finished container into the run's pod status, as the kubelet would."""
    pod = wait_for(lambda: next(iter(pods(api, namespace, run_id)), None), what="the run's pod")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": CONTAINER,
                    "image": "loopline/training:0.1.0",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "message": message,
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    k8s.CoreV1Api(api).patch_namespaced_pod_status(pod.metadata.name, namespace, body)


def job_condition(api: k8s.ApiClient, namespace: str, run_id: str) -> str | None:
    job = k8s.BatchV1Api(api).read_namespaced_job(run_id, namespace)
    for cond in job.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


def test_submit_creates_one_job_and_a_restarted_operator_adopts_it(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend = JobPipelineBackend(SETTINGS, api=kube_api)
    run = spec(namespace)
    assert backend.submit(run) == run.run_id
    assert backend.submit(run) == run.run_id
    restarted = JobPipelineBackend(SETTINGS, api=kube_api)  # knows nothing in memory
    found = restarted.status(run.run_id)  # found by label across the cluster
    assert found is not None
    assert found.phase == RunPhase.PENDING
    assert restarted.submit(run) == run.run_id
    assert [j.metadata.name for j in jobs(kube_api, namespace)] == [run.run_id]
    assert restarted.runs_of(namespace, MODEL) == [run.run_id]
    assert restarted.runs_of(namespace, "other-model") == []
    assert restarted.status("drill-ae-ffffffffffff") is None


def test_missing_feature_repo_claim_keeps_the_run_pending_with_its_name(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend = JobPipelineBackend(SETTINGS, api=kube_api)
    run = spec(namespace)
    backend.submit(run)
    result = wait_for(
        lambda: (r := backend.status(run.run_id)) and "not scheduled" in r.message and r,
        timeout=60,
        what="the scheduler's verdict on the run's pod",
    )
    assert result.phase == RunPhase.PENDING
    assert f'persistentvolumeclaim "{FEATURE_REPO_CLAIM}" not found' in result.message


def test_succeeded_pod_gives_the_runner_s_result(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend = JobPipelineBackend(SETTINGS, api=kube_api)
    run = spec(namespace)
    backend.submit(run)
    outcome = TrainingRunResult(
        run_id=run.run_id,
        phase=RunPhase.SUCCEEDED,
        step="register-model",
        model_version="3",
        gate_passed=True,
        message="f1 0.93 >= champion v2 0.90",
        metrics={"f1": 0.93},
        finished_at=datetime.now(UTC),
    )
    end_pod(kube_api, namespace, run.run_id, 0, outcome.model_dump_json(by_alias=True))
    wait_for(
        lambda: job_condition(kube_api, namespace, run.run_id) == "Complete",
        what="the Job controller to complete the Job",
    )
    assert backend.status(run.run_id) == outcome
    # The pod keeps what the test wrote: nothing on a fake node rewrote it.
    (pod,) = pods(kube_api, namespace, run.run_id)
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_failed_pod_fails_the_job_with_the_runner_s_message(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend = JobPipelineBackend(SETTINGS, api=kube_api)
    run = spec(namespace)
    backend.submit(run)
    failure = TrainingRunResult(
        run_id=run.run_id,
        phase=RunPhase.FAILED,
        step="validate-data",
        message="data quality gate failed: completeness 0.80 < 0.95",
    )
    end_pod(kube_api, namespace, run.run_id, 1, failure.model_dump_json(by_alias=True))
    wait_for(
        lambda: job_condition(kube_api, namespace, run.run_id) == "Failed",
        what="the Job controller to fail the Job (backoffLimit 0)",
    )
    result = backend.status(run.run_id)
    assert result is not None
    assert (result.phase, result.step, result.message) == (
        RunPhase.FAILED,
        "validate-data",
        failure.message,
    )
    # No retry: the operator decides about those.
    assert len(pods(kube_api, namespace, run.run_id)) == 1


def test_pod_kwok_completes_has_no_result(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    """Without the claim kwok runs the pod and completes it at once with no message: a
    container that exits 0 without the runner's result is a failed run, never a success."""
    backend = JobPipelineBackend(
        SETTINGS.model_copy(update={"feature_repo_claim": ""}), api=kube_api
    )
    run = spec(namespace)
    backend.submit(run)
    wait_for(
        lambda: job_condition(kube_api, namespace, run.run_id) == "Complete",
        what="kwok to complete the Job's pod",
    )
    result = backend.status(run.run_id)
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "without writing its result" in result.message
    assert f"kubectl logs job/{run.run_id} -n {namespace}" in result.message


def test_cancel_deletes_the_job_and_its_pod(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    backend = JobPipelineBackend(SETTINGS, api=kube_api)
    run = spec(namespace)
    other = spec(namespace, "second")
    backend.submit(run)
    backend.submit(other)
    wait_for(lambda: pods(kube_api, namespace, run.run_id), what="the run's pod")
    restarted = JobPipelineBackend(SETTINGS, api=kube_api)
    restarted.cancel(run.run_id)
    restarted.cancel(run.run_id)  # idempotent, also while the Job is going
    during = restarted.status(run.run_id)
    assert during is None or during.phase == RunPhase.CANCELLED
    wait_for(
        lambda: (
            not pods(kube_api, namespace, run.run_id)
            and [j.metadata.name for j in jobs(kube_api, namespace)] == [other.run_id]
        ),
        what="the cancelled Job and its pod to be gone",
    )
    assert restarted.status(run.run_id) is None
    assert restarted.runs_of(namespace, MODEL) == [other.run_id]
    restarted.cancel("drill-ae-000000000000")  # unknown: nothing to do


def test_a_foreign_job_with_the_run_s_name_is_not_adopted(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    run = spec(namespace)
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": run.run_id},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "busybox", "command": ["true"]}],
                }
            }
        },
    }
    k8s.BatchV1Api(kube_api).create_namespaced_job(namespace, foreign)
    with pytest.raises(BackendRejected, match="is not a training run of Model drill-ae"):
        JobPipelineBackend(SETTINGS, api=kube_api).submit(run)


def test_a_batch_run_is_a_runtime_image_job_found_by_the_same_selectors(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    """A batch-scoring run beside a training run of the same Model: its own Job from the
    runtime image, adopted on a second submit, listed with the Model's runs (cleanup cancels
    it), and read back from its termination message like a training run."""
    from loopline.types.batch import BatchRunSpec

    settings = SETTINGS.model_copy(update={"runtime_image": "loopline/runtime:0.1.0"})
    backend = JobPipelineBackend(settings, api=kube_api)
    training = spec(namespace, "training")
    digest = hashlib.sha256(f"{namespace}/batch".encode()).hexdigest()[:6]
    batch = BatchRunSpec(
        run_id=f"drill-ae-batch-202603020200-{digest}",
        namespace=namespace,
        model_name=MODEL,
        registered_model_name=f"{namespace}.{MODEL}",
        mlflow_tracking_uri="http://127.0.0.1:5000",
        feature_repo="/somewhere/feature_repo",
    )
    backend.submit(training)
    assert backend.submit(batch) == batch.run_id
    assert backend.submit(batch) == batch.run_id
    made = k8s.BatchV1Api(kube_api).read_namespaced_job(batch.run_id, namespace)
    assert made.metadata.labels["loopline.dev/component"] == "batch-scoring"
    assert made.spec.template.spec.containers[0].image == "loopline/runtime:0.1.0"
    assert sorted(backend.runs_of(namespace, MODEL)) == sorted([training.run_id, batch.run_id])
    result = TrainingRunResult(
        run_id=batch.run_id, phase=RunPhase.SUCCEEDED, step="score-window", model_version="3"
    )
    end_pod(kube_api, namespace, batch.run_id, 0, result.model_dump_json(by_alias=True))
    restarted = JobPipelineBackend(settings, api=kube_api)
    read = wait_for(
        lambda: (
            (r := restarted.status(batch.run_id)) is not None
            and r.phase == RunPhase.SUCCEEDED
            and r
        ),
        what="the batch run's result",
    )
    assert read.model_version == "3"
    assert read.step == "score-window"
