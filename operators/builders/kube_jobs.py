"""A training run as a Kubernetes Job, and the Job read back as a `TrainingRunResult` (pure).

One run is one Job named after the run id (a DNS label), with one pod and one container that
runs the pipeline the way the local backend's worker does (`python -m loopline.pipelines.run`,
kfp.local's subprocess runner inside the pod). How the pieces travel, and why:

- The spec goes in as an annotation of the pod template, which a downward API volume mounts as
  the file the runner reads: it lives and dies with the Job (no ConfigMap to clean up), it is
  readable with `kubectl get job -o yaml`, and the runner keeps its `--spec FILE` interface.
- The result comes back as the container's termination message: the runner writes the final
  `TrainingRunResult`, compacted to the kubelet's 4 KB limit, to `/dev/termination-log`, and
  the kubelet copies it into the pod's status. The pod needs no API credentials and no
  permission to patch anything (the alternative, progress as pod annotations, would need
  both), and the operator needs no shared disk. The price: the step in progress is not
  visible while the run is going, only the final result (and `kubectl logs`).
  `FallbackToLogsOnError` puts the log's tail there when the runner dies before writing it
  (an unreadable spec, an import error), so a crash still explains itself.
- The Feast repository comes from a PersistentVolumeClaim in the Model's namespace, mounted
  read-only at `FEATURE_REPO_MOUNT`, and the spec's `featureRepo` points there. It holds
  `feature_store.yaml`, `repo.json`, `definitions.py` and, with the file stores, `data/`.
  Feast's registry records the sources' absolute paths, so the repository must have been
  applied (`loopline data register --repo ...`) at that same path, i.e. from a pod mounting
  the claim there. With a Redis/Postgres configuration the volume holds only the
  configuration and definitions; the stores' credentials come from the optional `env_secret`.
- kfp.local's working directories, HOME and the caches go to an emptyDir on /tmp; the root
  filesystem stays read-only.

The operator decides about retries, so `backoffLimit` is 0; a finished Job stays
`ttl_seconds` (three days) so a stopped operator can still read the result when it returns.
A Job that is gone reads as an unknown run, which the operator submits again under the same id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from loopline.operators.builders.auth import MANAGED_BY, MODEL_LABEL
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec

COMPONENT_LABEL = "loopline.dev/component"
COMPONENT = "training"
RUN_ID_LABEL = "loopline.dev/run-id"
SPEC_ANNOTATION = "loopline.dev/run-spec"
CONTAINER = "train"

SPEC_DIR = "/etc/loopline/run"
SPEC_FILE = "spec.json"
WORK_DIR = "/tmp"
RUN_DIR = f"{WORK_DIR}/run"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
FEATURE_REPO_MOUNT = "/var/lib/loopline/feature-repo"

TTL_SECONDS = 3 * 24 * 3600
UID = 10001
# Training is torch on one intra-op thread (docs/training.md) while kfp.local runs the steps
# one after another: one core, and memory for torch, pandas and a window of a few million
# values; the limit leaves room for the evaluation's copies of the frame.
RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "6Gi"},
}
WORK_SIZE = "4Gi"  # the emptyDir: the window's parquet, the model bundle, reports

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The API server's limit on all annotations of an object together is 256 KiB.
_SPEC_MAX = 200 * 1024
# Reasons a container waits with that mean it will not start by itself.
_STUCK = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "ErrImageNeverPull": "the image is not on the node and imagePullPolicy is Never",
    "CreateContainerConfigError": "the container's configuration is invalid",
    "CreateContainerError": "the container cannot be created",
}


@dataclass(frozen=True)
class JobConfig:
    """What every training Job of one operator shares (from its settings)."""

    image: str
    tracking_uri: str
    image_pull_policy: str = "IfNotPresent"
    feature_claim: str | None = None  # None: the image's own repository (no data in it)
    env_secret: str | None = None  # optional Secret in the Model's namespace, as env
    deadline_seconds: int | None = None
    ttl_seconds: int = TTL_SECONDS
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: RESOURCES)


def labels(model: str, run_id: str = "") -> dict[str, str]:
    found = {**MANAGED_BY, MODEL_LABEL: model, COMPONENT_LABEL: COMPONENT}
    return {**found, RUN_ID_LABEL: run_id} if run_id else found


def model_selector(model: str) -> str:
    return ",".join(f"{k}={v}" for k, v in labels(model).items())


def run_selector(run_id: str) -> str:
    return f"{RUN_ID_LABEL}={run_id},{COMPONENT_LABEL}={COMPONENT}"


def logs_hint(namespace: str, run_id: str) -> str:
    return f"kubectl logs job/{run_id} -n {namespace}"


def pod_spec_of(spec: TrainingRunSpec, config: JobConfig) -> TrainingRunSpec:
    """The spec as the pod must see it: MLflow as pods reach it, the mounted Feast repo."""
    update: dict[str, Any] = {"mlflow_tracking_uri": config.tracking_uri}
    if config.feature_claim:
        update["feature_repo"] = FEATURE_REPO_MOUNT
    return spec.model_copy(update=update)


def build_training_job(spec: TrainingRunSpec, config: JobConfig) -> dict[str, Any]:
    """The batch/v1 Job of one training run."""
    for what, value in (("run id", spec.run_id), ("model name", spec.model_name)):
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"{what} {value!r} is not a DNS label (lowercase letters, digits and '-', "
                "at most 63 characters): it names the training Job and labels its pod"
            )
    if not config.image:
        raise ValueError("no training image: set LOOPLINE_OPERATOR_TRAINING_IMAGE")
    if not config.tracking_uri:
        raise ValueError(
            "no MLflow tracking URI for training pods: set "
            "LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI to MLflow's address as pods reach it"
        )
    spec_json = pod_spec_of(spec, config).model_dump_json(by_alias=True)
    if len(spec_json) > _SPEC_MAX:
        raise ValueError(f"run spec of {spec.run_id} is {len(spec_json)} bytes: too large")
    run_labels = labels(spec.model_name, spec.run_id)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds,
        "template": {
            "metadata": {"labels": run_labels, "annotations": {SPEC_ANNOTATION: spec_json}},
            "spec": _pod_spec(config),
        },
    }
    if config.deadline_seconds:
        job_spec["activeDeadlineSeconds"] = config.deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.run_id, "namespace": spec.namespace, "labels": run_labels},
        "spec": job_spec,
    }


def _pod_spec(config: JobConfig) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"name": "run-spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "work", "mountPath": WORK_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "run-spec",
            "downwardAPI": {
                "items": [
                    {
                        "path": SPEC_FILE,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"},
                    }
                ]
            },
        },
        {"name": "work", "emptyDir": {"sizeLimit": WORK_SIZE}},
    ]
    if config.feature_claim:
        mounts.append({"name": "feature-repo", "mountPath": FEATURE_REPO_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "feature-repo",
                "persistentVolumeClaim": {"claimName": config.feature_claim, "readOnly": True},
            }
        )
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": config.tracking_uri},
        {"name": "HOME", "value": WORK_DIR},
        {"name": "TMPDIR", "value": WORK_DIR},
        {"name": "LOOPLINE_CACHE_DIR", "value": f"{WORK_DIR}/loopline-cache"},
        {"name": "LOOPLINE_STATE_DIR", "value": f"{WORK_DIR}/loopline-state"},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "loopline.pipelines.run"],
        "args": [
            "--spec",
            f"{SPEC_DIR}/{SPEC_FILE}",
            "--result",
            f"{RUN_DIR}/result.json",
            "--workdir",
            RUN_DIR,
            "--termination-message",
            TERMINATION_MESSAGE_PATH,
        ],
        "env": env,
        "resources": {k: dict(v) for k, v in config.resources.items()},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if config.env_secret:
        container["envFrom"] = [{"secretRef": {"name": config.env_secret, "optional": True}}]
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


# --- reading a Job back ----------------------------------------------------------------------


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
