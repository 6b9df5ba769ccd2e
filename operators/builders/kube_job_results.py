"""A training Job and its pod, as the API server returns them, read as the run's result (pure).

The runner's own result arrives as the container's termination message
(`operators.builders.kube_jobs` says why); everything else here turns what Kubernetes says
about a Job that did not get that far (a pod that cannot start, a deadline, an out-of-memory
kill, a crash before the result) into a result whose message says what to do, with the
`kubectl logs` command that shows the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from loopline.operators.builders.kube_jobs import CONTAINER, logs_hint
from loopline.types.runs import RunPhase, TrainingRunResult

# Reasons a container waits with that mean it will not start by itself.
_STUCK = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "ErrImageNeverPull": "the image is not on the node and imagePullPolicy is Never",
    "CreateContainerConfigError": "the container's configuration is invalid",
    "CreateContainerError": "the container cannot be created",
}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _condition(obj: Mapping[str, Any], *types: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in types and cond.get("status") == "True":
            return dict(cond)
    return None


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


def _name(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "")


def _container_status(pod: Mapping[str, Any] | None) -> dict[str, Any]:
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def _terminated(pod: Mapping[str, Any] | None) -> dict[str, Any] | None:
    state = _container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def parse_result(message: str, run_id: str) -> TrainingRunResult | None:
    """The runner's result from a termination message; None if it is not one (the log's tail
    that `FallbackToLogsOnError` puts there instead, or another run's)."""
    text = message.strip()
    if not text.startswith("{"):
        return None
    try:
        result = TrainingRunResult.model_validate_json(text)
    except (ValidationError, ValueError):
        return None
    return result if result.run_id == run_id else None


def _tail(text: str, lines: int = 3, chars: int = 600) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-chars:]


def run_result(
    job: Mapping[str, Any] | None, pods: list[dict[str, Any]]
) -> TrainingRunResult | None:
    """A training run as its Job and pods show it; None when there is no Job (gone: the
    operator submits the run again under the same id)."""
    if job is None:
        return None
    meta = job.get("metadata") or {}
    run_id, namespace = str(meta.get("name")), str(meta.get("namespace"))
    logs = logs_hint(namespace, run_id)
    job_status = job.get("status") or {}
    started = _time(job_status.get("startTime"))
    base = TrainingRunResult(run_id=run_id, phase=RunPhase.PENDING, started_at=started)
    pod = _newest(pods)
    terminated = _terminated(pod)
    reported = parse_result(str(terminated.get("message") or ""), run_id) if terminated else None
    if meta.get("deletionTimestamp"):
        return (reported or base).model_copy(
            update={
                "phase": RunPhase.CANCELLED,
                "message": "cancelled: the Job is being deleted",
                "finished_at": _time(meta.get("deletionTimestamp")),
            }
        )
    done = _condition(job, "Complete", "SuccessCriteriaMet")
    failed = _condition(job, "Failed", "FailureTarget")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        step = f" during {reported.step}" if reported and reported.step else ""
        return (reported or base).model_copy(
            update={
                "phase": RunPhase.FAILED,
                "message": f"the run took longer than its deadline ({deadline} s){step} and "
                f"was stopped; logs: {logs}",
                "finished_at": _time(failed.get("lastTransitionTime")),
            }
        )
    if terminated is not None:
        return _finished(base, terminated, reported, logs)
    if done is not None or failed is not None:
        # Finished, but its pod (and with it the result) is gone: deleted by hand, or the
        # node that ran it is gone.
        cond = done or failed or {}
        detail = ": ".join(str(cond[k]) for k in ("reason", "message") if cond.get(k))
        pod_status = (pod or {}).get("status") or {}
        if pod_status.get("reason") or pod_status.get("message"):  # e.g. Evicted
            why = ": ".join(str(pod_status[k]) for k in ("reason", "message") if pod_status.get(k))
            return base.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "message": f"pod {_name(pod)} failed: {why}; logs: {logs}",
                    "finished_at": _time(cond.get("lastTransitionTime")),
                }
            )
        return base.model_copy(
            update={
                "phase": RunPhase.FAILED,
                "message": f"the Job finished ({cond.get('type')}{': ' + detail if detail else ''})"
                " but its pod and the result with it are gone",
                "finished_at": _time(cond.get("lastTransitionTime")),
            }
        )
    return _in_flight(base, pod, namespace)


def _finished(
    base: TrainingRunResult,
    terminated: Mapping[str, Any],
    reported: TrainingRunResult | None,
    logs: str,
) -> TrainingRunResult:
    code = terminated.get("exitCode")
    finished = _time(terminated.get("finishedAt"))
    if reported is not None and reported.phase in (
        RunPhase.SUCCEEDED,
        RunPhase.FAILED,
        RunPhase.CANCELLED,
    ):
        if reported.phase == RunPhase.SUCCEEDED and code != 0:
            return reported.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "message": f"the runner reported success but exited with code {code}; "
                    f"logs: {logs}",
                }
            )
        return (
            reported
            if reported.finished_at
            else reported.model_copy(update={"finished_at": finished})
        )
    start = reported or base
    reason = str(terminated.get("reason") or "")
    if reason == "OOMKilled":
        step = f" during {start.step}" if start.step else ""
        why = f"out of memory{step} (killed at the container's memory limit); logs: {logs}"
    elif code == 0:
        why = f"the training container exited without writing its result; logs: {logs}"
    else:
        text = "" if reported else _tail(str(terminated.get("message") or ""))
        why = f"the training container exited with code {code}" + (
            f" ({reason})" if reason and reason != "Error" else ""
        )
        why += f": {text}; logs: {logs}" if text else f"; logs: {logs}"
    return start.model_copy(
        update={"phase": RunPhase.FAILED, "message": why, "finished_at": finished}
    )


def _in_flight(
    base: TrainingRunResult, pod: Mapping[str, Any] | None, namespace: str
) -> TrainingRunResult:
    logs = logs_hint(namespace, base.run_id)
    if pod is None:
        return base.model_copy(
            update={
                "message": "waiting for the Job's pod (if none appears, `kubectl describe "
                f"job/{base.run_id} -n {namespace}` shows why)"
            }
        )
    name = _name(pod)
    state = _container_status(pod).get("state") or {}
    running = state.get("running")
    if running is not None:
        return base.model_copy(
            update={
                "phase": RunPhase.RUNNING,
                "message": f"running in pod {name}; logs: {logs}",
                "started_at": _time(running.get("startedAt")) or base.started_at,
            }
        )
    waiting = state.get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason in _STUCK:
        detail = str(waiting.get("message") or "")
        message = f"pod {name} cannot start: {_STUCK[reason]} ({reason}"
        message += f": {detail})" if detail else ")"
        if "Image" in reason:
            message += (
                "; check the operator's training image and pull policy "
                "(LOOPLINE_OPERATOR_TRAINING_IMAGE, LOOPLINE_OPERATOR_IMAGE_PULL_POLICY)"
            )
        return base.model_copy(update={"message": message})
    scheduled = next(
        (
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "PodScheduled"
        ),
        None,
    )
    if scheduled is not None and scheduled.get("status") == "False":
        detail = str(scheduled.get("message") or scheduled.get("reason") or "")
        hint = ""
        if "persistentvolumeclaim" in detail:
            hint = (
                "; the training pods mount the Feast repository from a PersistentVolumeClaim "
                "in the Model's namespace (docs/training.md)"
            )
        return base.model_copy(update={"message": f"pod {name} is not scheduled: {detail}{hint}"})
    return base.model_copy(
        update={"message": f"pod {name} is starting" + (f" ({reason})" if reason else "")}
    )
