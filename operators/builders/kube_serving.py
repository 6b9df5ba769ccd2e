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

The pods mount no ServiceAccount token unless the operator is given one for model servers
(`server_service_account`, the chart's `<release>-model-server`): a ServiceAccount bound by
the chart to `create` on tokenreviews and nothing else, whose token the server needs to verify
its callers' bearer tokens (`serving/token_review.py`). The operator only names it; it never
binds it.

What the Deployment serves (versions, weight) is written in its annotations, so the backend
reads it back without remembering anything; the pods of the current template carry a
revision label (a digest of the template), which tells them from the old ones in a rollout
(`kube_serving_status.py` reads them).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from loopline.operators.builders.auth import DIGEST_ENV, token_env
from loopline.operators.builders.serving import ServingDesired

MANAGED_BY = {"app.kubernetes.io/managed-by": "loopline"}
MODEL_LABEL = "loopline.dev/model"
COMPONENT_LABEL = "loopline.dev/component"
COMPONENT = "server"
REVISION_LABEL = "loopline.dev/revision"
CHAMPION_ANNOTATION = "loopline.dev/champion-version"
CANARY_ANNOTATION = "loopline.dev/canary-version"
WEIGHT_ANNOTATION = "loopline.dev/canary-weight"
CONTAINER = "server"
ASYNC_REDIS_URL_ENV = "LOOPLINE_ASYNC_REDIS_URL"  # loopline.serving.async_settings
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
_DNS1123_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
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


def _probe(path: str, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _container(
    desired: ServingDesired,
    *,
    image: str,
    pull_policy: str,
    tracking_uri: str,
    digest: str,
    async_redis_url: str = "",
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": DIGEST_ENV, "value": digest}, *token_env(desired.name)]
    if async_redis_url:  # the server's asynchronous inference worker and routes
        env.append({"name": ASYNC_REDIS_URL_ENV, "value": async_redis_url})
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
        # Liveness only restarts a server that stopped answering for a minute: one that is slow
        # because the node's CPU is busy (a training Job beside it) must not be killed, which
        # dropped its traffic and reloaded the model on a node already short of CPU. The startup
        # probe gives a starting server (imports, first model load) up to 5 minutes.
        "startupProbe": _probe("/v2/health/live", 5, 60),
        "livenessProbe": _probe("/v2/health/live", 10, 6, timeout=10),
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
    async_redis_url: str = "",
    service_account: str = "",
) -> dict[str, Any]:
    """The Model's server Deployment. `digest` is the token's (see `builders/auth.py`);
    `async_redis_url` turns on asynchronous inference in its pods; `service_account` runs
    them as that ServiceAccount with its token mounted (for TokenReviews), else as the
    namespace's default without a token."""
    if not image:
        raise ValueError(
            "the runtime image is empty: set LOOPLINE_OPERATOR_RUNTIME_IMAGE (the Loopline "
            "runtime image the kubernetes serving backend runs)"
        )
    if not digest:
        raise ValueError("digest is empty: the token digest that rolls the pods on rotation")
    if service_account and not _DNS1123_SUBDOMAIN.match(service_account):
        raise ValueError(
            f"server service account {service_account!r} is not a valid ServiceAccount name "
            "(LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT: lowercase letters, digits, '-' and "
            "'.', at most 253 characters)"
        )
    name = server_name(desired.name)
    identity: dict[str, Any] = (
        {"serviceAccountName": service_account, "automountServiceAccountToken": True}
        if service_account
        else {"automountServiceAccountToken": False}
    )
    template: dict[str, Any] = {
        "metadata": {"labels": labels(desired.name)},
        "spec": {
            **identity,
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
                    async_redis_url=async_redis_url,
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
