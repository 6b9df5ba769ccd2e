"""What a Model's server Deployment and its pods say about its serving: pure functions from
the objects as the API server returns them to a `ServingObserved` (the `kubernetes` serving
backend), and where each pod's metrics are read for the canary's decisions.

Ready means the rollout is done, as `kubectl rollout status` judges it. When it is not, the
pods of the current template say why, in words a user acts on: which pod, what the kubelet or
the scheduler reports, and the command that shows more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopline.operators.builders.kube_serving import (
    CANARY_ANNOTATION,
    CHAMPION_ANNOTATION,
    CONTAINER,
    METRICS_PORT,
    REVISION_LABEL,
    WEIGHT_ANNOTATION,
    endpoints,
)
from loopline.operators.builders.serving import (
    MODEL_NOT_READY,
    SERVER_FAILED,
    SERVER_RESTARTING,
    ServingObserved,
)

# Waiting reasons the kubelet will not get past without a change to the pod or the cluster.
FAILED_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Served:
    """What a Deployment serves, from its annotations and its template's revision."""

    champion_version: str
    canary_version: str | None
    canary_weight: int
    revision: str
    replicas: int


def served(deployment: dict[str, Any]) -> Served:
    meta = deployment.get("metadata") or {}
    notes = meta.get("annotations") or {}
    spec = deployment.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    canary = notes.get(CANARY_ANNOTATION) or None
    weight = notes.get(WEIGHT_ANNOTATION, "0")
    return Served(
        champion_version=str(notes.get(CHAMPION_ANNOTATION, "")),
        canary_version=canary,
        canary_weight=int(weight) if canary and str(weight).isdigit() else 0,
        revision=str(template_labels.get(REVISION_LABEL, "")),
        replicas=int(spec.get("replicas", 1)),
    )


def rollout_state(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, what it waits for), as `kubectl rollout status` judges a Deployment: the
    controller saw the current spec, every replica runs the current template, they are all
    available, and no old pod is left."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "")
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return False, f"Deployment {name} exceeded its progress deadline"
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False, f"Deployment {name}: waiting for the controller to see the new spec"
    if updated < want:
        return False, f"Deployment {name}: {updated} of {want} pods updated"
    if total > updated:
        return False, f"Deployment {name}: {total - updated} old pods still terminating"
    if available < updated:
        return False, f"Deployment {name}: {available} of {updated} updated pods available"
    return True, f"Deployment {name}: {available} of {want} pods ready"


def _time(value: Any) -> str:
    return str(value or "")


def pod_problem(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a server pod that does not serve and why, in words a user acts
    on (which pod, what the kubelet or scheduler says, the command that shows more); None for
    a pod that serves or is only starting (its model still loading)."""
    meta = pod.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return None
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return SERVER_FAILED, (
            f"pod {name} cannot be scheduled: {scheduled.get('message', '')} "
            f"(kubectl describe pod -n {namespace} {name}; check spec.serving.resources)"
        )
    logs = f"kubectl logs -n {namespace} {name} -c {CONTAINER}"
    for container in status.get("containerStatuses") or []:
        if container.get("name") != CONTAINER:
            continue
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        restarts = int(container.get("restartCount") or 0)
        reason = waiting.get("reason", "")
        if reason in FAILED_WAITING:
            return SERVER_FAILED, (
                f"pod {name}: {reason}: {waiting.get('message', '')} "
                f"(kubectl describe pod -n {namespace} {name})"
            )
        if reason == "CrashLoopBackOff" or (restarts and not container.get("ready")):
            exited = (
                f"exited with code {last.get('exitCode')} ({last.get('reason', '')})"
                if last
                else "exited"
            )
            return SERVER_RESTARTING, (
                f"pod {name}: the model server {exited}, restarted {restarts} times; "
                f"the kubelet restarts it with backoff ({logs} --previous)"
            )
        running = state.get("running") or {}
        ready = conditions.get("Ready") or {}
        # Unready after having been ready: the Ready condition changed after the container
        # started (a first start is unready from the pod's creation, before the container).
        if (
            running
            and not container.get("ready")
            and ready.get("status") == "False"
            and _time(ready.get("lastTransitionTime")) > _time(running.get("startedAt"))
        ):
            return MODEL_NOT_READY, (
                f"pod {name}: the model server runs but its model stopped answering ready "
                f"since {ready.get('lastTransitionTime')} ({logs})"
            )
    return None


_SEVERITY = {SERVER_FAILED: 3, SERVER_RESTARTING: 2, MODEL_NOT_READY: 1}


def observe_serving(
    deployment: dict[str, Any], pods: list[dict[str, Any]], namespace: str, model: str
) -> ServingObserved:
    """What the Deployment and its pods say about the Model's serving (no traffic stats).

    Problems of the pods of the current template are reported with the worst reason (the
    Model shows Degraded), except a canary step whose new pods crash while the previous
    pods still serve: that is the canary's failure, so it is rolled back (`canary_healthy`
    False) and the Model, still answered, is not Degraded."""
    now = served(deployment)
    done, progress = rollout_state(deployment)
    status = deployment.get("status") or {}
    problems = [
        (p, problem)
        for p in pods
        if (problem := pod_problem(p)) is not None
        and ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL) == now.revision
    ]
    problems.sort(key=lambda item: -_SEVERITY[item[1][0]])
    reason = problems[0][1][0] if problems and not done else ""
    canary_healthy: bool | None = None
    canary_reason = ""
    still_served = int(status.get("availableReplicas") or 0) > 0
    if (
        reason == SERVER_RESTARTING
        and now.canary_version
        and still_served
        and int(status.get("updatedReplicas") or 0) < int(status.get("replicas") or 0)
    ):
        canary_healthy = False
        canary_reason = f"version {now.canary_version} at {now.canary_weight}%: {problems[0][1][1]}"
        reason = ""
    message = progress if done else "; ".join([progress, *(m for _, (_, m) in problems[:3])])
    return ServingObserved(
        ready=done and now.replicas > 0,
        champion_version=now.champion_version,
        canary_version=now.canary_version,
        canary_weight=now.canary_weight,
        endpoints=endpoints(namespace, model),
        message=message,
        reason=reason,
        canary_healthy=canary_healthy,
        canary_reason=canary_reason,
    )


def metrics_port(pod: dict[str, Any]) -> int:
    """The server container's port named `metrics` (the template's, so a pod started by an
    older operator with another port is still read right)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != CONTAINER:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == "metrics" and port.get("containerPort"):
                return int(port["containerPort"])
    return METRICS_PORT


def metrics_urls(pods: list[dict[str, Any]], revision_: str) -> dict[str, str]:
    """pod name -> its /metrics URL, for the ready pods of the current template (the ones
    serving the current canary step)."""
    urls: dict[str, str] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if (meta.get("labels") or {}).get(REVISION_LABEL) != revision_ or meta.get(
            "deletionTimestamp"
        ):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("podIP"):
            urls[meta["name"]] = f"http://{status['podIP']}:{metrics_port(pod)}/metrics"
    return urls
