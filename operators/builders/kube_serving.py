"""The `kubernetes` serving backend's desired objects and what their state means: pure.

Per Model one Deployment and one Service, named `<model>-server`. Every pod runs the runtime
image's lean V2 server (`loopline serve pod`) with the champion and, during a canary, the
canary version and its weight: the split happens inside each pod, exactly as in a local
server, so a new weight is a new pod template and the Deployment rolls. A rolling update never
drops a request: a new pod takes traffic only once its model is loaded (readiness is
`/v2/health/ready`, 200 only with the model loaded), no old pod stops before its replacement
is ready (maxUnavailable 0, maxSurge 1), and a stopping pod first waits out endpoint
propagation (preStop sleep) before the server gets SIGTERM, finishes its requests and exits.

The Model's token reaches the pod from its Secret by reference; the token's digest is a plain
variable of the template, so a rotated token rolls the pods (`builders/auth.py`).

What the Deployment serves (versions, weight) is written in its annotations, so the backend
reads it back without remembering anything; the pods of the current template carry a
revision label (a digest of the template), which tells them from the old ones in a rollout.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from loopline.operators.builders.auth import DIGEST_ENV, token_env
from loopline.operators.builders.serving import (
    MODEL_NOT_READY,
    SERVER_FAILED,
    SERVER_RESTARTING,
    ServingDesired,
    ServingObserved,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "loopline"}
MODEL_LABEL = "loopline.dev/model"
COMPONENT_LABEL = "loopline.dev/component"
COMPONENT = "server"
REVISION_LABEL = "loopline.dev/revision"
CHAMPION_ANNOTATION = "loopline.dev/champion-version"
CANARY_ANNOTATION = "loopline.dev/canary-version"
WEIGHT_ANNOTATION = "loopline.dev/canary-weight"
CONTAINER = "server"
SUFFIX = "-server"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 8081, 8082
SERVER_DIR = "/var/lib/loopline/serving"
# Endpoint removal reaches kube-proxy and ingress controllers within a few seconds; until then
# a terminating pod still gets new requests, so it keeps serving that long before SIGTERM.
DRAIN_SECONDS = 10
# SIGTERM to exit: requests in flight, gRPC's 2 s grace, unloading; a clean stop took 11 s on
# a loaded 2-core machine (serving/local.py), so 30 s leaves room before the SIGKILL.
STOP_SECONDS = 30
TMP_SIZE = "1Gi"  # HOME and the MLflow download cache of the model versions
STATE_SIZE = "64Mi"  # the server's two settings files
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
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


def server_name(model: str) -> str:
    """The Deployment's and the Service's name; a Service name is a DNS-1035 label."""
    name = f"{model}{SUFFIX}"
    if len(name) > 63 or not _DNS1035.match(name):
        raise ValueError(
            f"Model name {model!r}: the kubernetes serving backend names its Service "
            f"{name!r}, which must be a DNS-1035 label (start with a letter, at most 63 "
            f"characters): use a Model name of at most {63 - len(SUFFIX)} characters that "
            "starts with a letter"
        )
    return name


def selector(model: str) -> dict[str, str]:
    return {MODEL_LABEL: model, COMPONENT_LABEL: COMPONENT}


def labels(model: str) -> dict[str, str]:
    return {**MANAGED_BY, **selector(model)}


def model_uri(registered_model: str, version: str) -> str:
    return f"models:/{registered_model}/{version}"


def server_args(desired: ServingDesired, *, tracking_uri: str) -> list[str]:
    """`loopline serve pod` options: what the lean server serves and where it reports."""
    args = [
        "--server=lean",
        f"--name={desired.name}",
        f"--model-uri={model_uri(desired.registered_model, desired.champion_version)}",
    ]
    if desired.canary_version:
        args += [
            f"--canary-uri={model_uri(desired.registered_model, desired.canary_version)}",
            f"--canary-weight={desired.canary_weight / 100:g}",
        ]
    if tracking_uri:
        args.append(f"--tracking-uri={tracking_uri}")
    if desired.monitor_url:
        args.append(f"--monitor-url={desired.monitor_url}")
    fallback = "" if desired.fallback_on_missing_sensors else "no-"
    args += [
        f"--{fallback}fallback-on-missing-sensors",
        f"--dir={SERVER_DIR}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
    ]
    return args


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _container(
    desired: ServingDesired, *, image: str, pull_policy: str, tracking_uri: str, digest: str
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": DIGEST_ENV, "value": digest}, *token_env(desired.name)]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["loopline", "serve", "pod"],
        "args": server_args(desired, tracking_uri=tracking_uri),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # 200 only once the model (both versions of a canary) is loaded; a model that cannot
        # load ends the process, so the container restarts instead of staying unready.
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "state", "mountPath": "/var/lib/loopline"},
        ],
    }
    if desired.resources is not None and desired.resources.as_kubernetes():
        container["resources"] = desired.resources.as_kubernetes()
    return container


def revision(template: dict[str, Any]) -> str:
    """A digest of a pod template: the same spec gives the same revision."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_deployment(
    desired: ServingDesired,
    *,
    image: str,
    pull_policy: str = "IfNotPresent",
    tracking_uri: str,
    digest: str,
) -> dict[str, Any]:
    """The Model's server Deployment. `digest` is the token's (see `builders/auth.py`)."""
    if not image:
        raise ValueError(
            "the runtime image is empty: set LOOPLINE_OPERATOR_RUNTIME_IMAGE (the Loopline "
            "runtime image the kubernetes serving backend runs)"
        )
    if not digest:
        raise ValueError("digest is empty: the token digest that rolls the pods on rotation")
    name = server_name(desired.name)
    template: dict[str, Any] = {
        "metadata": {"labels": labels(desired.name)},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": DRAIN_SECONDS + STOP_SECONDS,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                _container(
                    desired,
                    image=image,
                    pull_policy=pull_policy,
                    tracking_uri=tracking_uri,
                    digest=digest,
                )
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
                {"name": "state", "emptyDir": {"sizeLimit": STATE_SIZE}},
            ],
        },
    }
    template["metadata"]["labels"][REVISION_LABEL] = revision(template)
    annotations = {
        CHAMPION_ANNOTATION: desired.champion_version,
        CANARY_ANNOTATION: desired.canary_version or "",
        WEIGHT_ANNOTATION: str(desired.canary_weight if desired.canary_version else 0),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": desired.namespace,
            "labels": labels(desired.name),
            "annotations": annotations,
        },
        "spec": {
            "replicas": desired.replicas,
            "selector": {"matchLabels": selector(desired.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "revisionHistoryLimit": 3,
            "template": template,
        },
    }


def build_service(namespace: str, model: str) -> dict[str, Any]:
    """The Model's ClusterIP Service: REST and gRPC (and metrics, for a Prometheus)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": server_name(model), "namespace": namespace, "labels": labels(model)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(model),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def endpoints(namespace: str, model: str) -> dict[str, str]:
    """The in-cluster URLs of the Model's Service (what `status.endpoints` shows)."""
    host = f"{server_name(model)}.{namespace}.svc"
    return {"rest": f"http://{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}


# -- what the cluster reports ---------------------------------------------------------------


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
