"""A training Job and its pod, as the API server returns them, read back as the run's result
(operators.builders.kube_jobs.run_result). The dicts are shaped like the API server's JSON:
the Job controller's conditions and the kubelet's container states."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loopline.operators.builders.kube_job_results import run_result
from loopline.operators.builders.kube_jobs import CONTAINER
from loopline.types.runs import RunPhase, TrainingRunResult

RUN = "drill-ae-0123456789ab"
LOGS = f"kubectl logs job/{RUN} -n plant"
STARTED = "2026-12-05T09:00:00Z"
ENDED = "2026-12-05T09:07:30Z"


def job(*conditions: dict[str, str], deadline: int | None = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": RUN, "namespace": "plant", **meta},
        "spec": {"backoffLimit": 0},
        "status": {
            "startTime": STARTED,
            "conditions": [{"status": "True", **c} for c in conditions],
        },
    }
    if deadline:
        obj["spec"]["activeDeadlineSeconds"] = deadline
    return obj


def pod(state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    container = {"name": CONTAINER, "state": state or {}}
    return {
        "metadata": {"name": f"{RUN}-x7k2p", "creationTimestamp": STARTED},
        "status": {"phase": "Pending", "containerStatuses": [container], **status},
    }


def terminated(code: int, message: str = "", reason: str = "") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "message": message,
            "startedAt": STARTED,
            "finishedAt": ENDED,
        }
    }


SUCCEEDED = TrainingRunResult(
    run_id=RUN,
    phase=RunPhase.SUCCEEDED,
    step="register-model",
    model_version="4",
    gate_passed=True,
    message="f1 0.91 >= champion v3 0.88",
    metrics={"f1": 0.91, "roc_auc": 0.99},
    mlflow_run_id="abc123",
    started_at=datetime(2026, 12, 5, 9, 0, 5, tzinfo=UTC),
    finished_at=datetime(2026, 12, 5, 9, 7, 29, tzinfo=UTC),
)


def test_no_job_is_an_unknown_run() -> None:
    assert run_result(None, []) is None


def test_job_without_pod_is_pending_and_says_where_to_look() -> None:
    result = run_result(job(), [])
    assert result is not None
    assert result.phase == RunPhase.PENDING
    assert f"kubectl describe job/{RUN} -n plant" in result.message
    assert result.started_at == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_image_that_cannot_be_pulled_stays_pending_with_what_to_fix() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling "x:1"'}}
    result = run_result(job(), [pod(waiting)])
    assert result is not None
    assert result.phase == RunPhase.PENDING
    assert "the image cannot be pulled (ImagePullBackOff: Back-off pulling" in result.message
    assert "LOOPLINE_OPERATOR_TRAINING_IMAGE" in result.message


def test_missing_feature_repo_claim_is_named() -> None:
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": '0/1 nodes are available: persistentvolumeclaim "loopline-feature-repo" '
        "not found.",
    }
    result = run_result(job(), [pod(conditions=[scheduled])])
    assert result is not None
    assert result.phase == RunPhase.PENDING
    assert 'persistentvolumeclaim "loopline-feature-repo" not found' in result.message
    assert "Feast repository" in result.message


def test_running_container_is_running_with_the_logs_command() -> None:
    result = run_result(job(), [pod({"running": {"startedAt": "2026-12-05T09:00:05Z"}})])
    assert result is not None
    assert result.phase == RunPhase.RUNNING
    assert LOGS in result.message
    assert result.started_at == datetime(2026, 12, 5, 9, 0, 5, tzinfo=UTC)


def test_completed_job_returns_the_runner_s_result_from_the_termination_message() -> None:
    message = SUCCEEDED.model_dump_json(by_alias=True, exclude_defaults=True)
    finished = pod(terminated(0, message))
    result = run_result(job({"type": "Complete"}), [finished])
    assert result == SUCCEEDED
    # The pod's end is final (restartPolicy Never): the result does not wait for the Job.
    assert run_result(job(), [finished]) == SUCCEEDED


def test_failed_run_keeps_the_runner_s_step_and_message() -> None:
    failed = TrainingRunResult(
        run_id=RUN,
        phase=RunPhase.FAILED,
        step="validate-data",
        message="data quality gate failed: completeness 0.81 < 0.95",
    )
    message = failed.model_dump_json(by_alias=True, exclude_defaults=True)
    failed_job = job({"type": "Failed", "reason": "BackoffLimitExceeded"})
    result = run_result(failed_job, [pod(terminated(1, message))])
    assert result is not None
    assert (result.phase, result.step, result.message) == (
        RunPhase.FAILED,
        "validate-data",
        failed.message,
    )
    assert result.finished_at == datetime(2026, 12, 5, 9, 7, 30, tzinfo=UTC)


def test_crash_before_a_result_shows_the_log_tail() -> None:
    tail = (
        "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'torch'\n"
    )
    result = run_result(
        job({"type": "Failed", "reason": "BackoffLimitExceeded"}), [pod(terminated(1, tail))]
    )
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "exited with code 1" in result.message
    assert "No module named 'torch'" in result.message
    assert LOGS in result.message


def test_out_of_memory_says_so() -> None:
    result = run_result(
        job({"type": "Failed", "reason": "BackoffLimitExceeded"}),
        [pod(terminated(137, reason="OOMKilled"))],
    )
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "out of memory" in result.message


def test_deadline_exceeded_is_a_failure_even_if_the_runner_recorded_its_cancel() -> None:
    cancelled = TrainingRunResult(run_id=RUN, phase=RunPhase.CANCELLED, step="train-model")
    message = cancelled.model_dump_json(by_alias=True)
    failed = job(
        {"type": "Failed", "reason": "DeadlineExceeded", "lastTransitionTime": ENDED},
        deadline=3600,
    )
    result = run_result(failed, [pod(terminated(143, message))])
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "deadline (3600 s) during train-model" in result.message
    # The Job controller may have deleted the pod already.
    gone = run_result(failed, [])
    assert gone is not None
    assert gone.phase == RunPhase.FAILED
    assert "deadline (3600 s)" in gone.message


def test_job_being_deleted_is_cancelled() -> None:
    result = run_result(job(deletionTimestamp=ENDED), [pod({"running": {}})])
    assert result is not None
    assert result.phase == RunPhase.CANCELLED


def test_exit_zero_without_a_result_is_a_failure() -> None:
    result = run_result(job({"type": "Complete"}), [pod(terminated(0))])
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "without writing its result" in result.message


def test_another_run_s_result_is_not_taken() -> None:
    other = SUCCEEDED.model_copy(update={"run_id": "drill-ae-ffffffffffff"})
    message = other.model_dump_json(by_alias=True)
    result = run_result(job({"type": "Complete"}), [pod(terminated(0, message))])
    assert result is not None
    assert result.phase == RunPhase.FAILED


def test_success_reported_with_a_failing_exit_code_is_a_failure() -> None:
    message = SUCCEEDED.model_dump_json(by_alias=True)
    result = run_result(job(), [pod(terminated(2, message))])
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "exited with code 2" in result.message


def test_evicted_pod_says_why() -> None:
    evicted = pod(reason="Evicted", message="The node was low on resource: ephemeral-storage.")
    result = run_result(job({"type": "Failed", "reason": "BackoffLimitExceeded"}), [evicted])
    assert result is not None
    assert result.phase == RunPhase.FAILED
    assert "Evicted: The node was low on resource: ephemeral-storage." in result.message
