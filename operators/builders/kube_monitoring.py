"""A Model's drift monitor on a cluster: the objects, as pure data built from `MonitorDesired`.

One monitor per Model, in the Model's namespace, all named after it:

- Deployment `<model>-monitor`: one pod running `loopline monitor serve` from the runtime
  image, configured by the same `LOOPLINE_MONITOR_*` variables the local backend sets. One
  replica with the Recreate strategy: its windows, cooldown clock and undelivered retraining
  request are its own state, on a ReadWriteOnce volume two pods could not share anyway.
- PersistentVolumeClaim `<model>-monitor`: that state (`monitor-state.npz`), so a restarted or
  rescheduled monitor goes on with its window and its decisions instead of starting over.
- Service `<model>-monitor`: where the model server pods sample to (its cluster DNS name) and
  where the operator reads the status (its ClusterIP, see `status_url`).
- NetworkPolicy `<model>-monitor`: the monitor's one port, for the Model's model server pods
  and the peers the operator is configured with (itself, Prometheus); nothing else.
- ServiceAccount `<model>-loopline-monitor` and a RoleBinding of it to the monitor
  ClusterRole (patch on Models): the monitor raises retraining requests by annotating its
  Model. The identity is per Model because the admission policy
  (manifests/policies/monitor-retrain-only.yaml) lets each monitor annotate only the Model
  whose name its ServiceAccount carries: an exact comparison of names, which a pod name
  (truncated by the API server for long names) could not give.

The Model's token reaches the pod from its Secret by reference (`builders.auth`); the token's
digest and the champion version sit in the pod template, so a rotated token or a new champion
rolls the pod, as the local backend restarts its process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loopline.operators.builders.auth import DIGEST_ENV, MANAGED_BY, MODEL_LABEL, token_env
from loopline.operators.builders.monitoring import MonitorDesired, monitor_settings
from loopline.operators.builders.volumes import RUN_AS, build_claim, permissions_init_container

COMPONENT_LABEL = "loopline.dev/component"
COMPONENT = "monitor"
SUFFIX = "-monitor"
ACCOUNT_SUFFIX = "-loopline-monitor"  # the admission policy matches ServiceAccounts by it
PORT = 8090
PORT_NAME = "http"
STATE_MOUNT = "/var/lib/loopline"
STATE_DIR = f"{STATE_MOUNT}/monitor"
VOLUME_SIZE = "1Gi"
TMP_SIZE = "256Mi"
CHAMPION_ANNOTATION = "loopline.dev/champion-version"
RELOAD_ANNOTATION = "loopline.dev/reference-reload"
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "512Mi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63


@dataclass(frozen=True)
class MonitorPodConfig:
    """What every monitor shares, from the operator's settings (builders read no settings)."""

    image: str
    tracking_uri: str
    pull_policy: str = "IfNotPresent"
    storage_class: str = ""  # empty: the cluster's default StorageClass
    volume_size: str = VOLUME_SIZE
    permissions_init: bool = False  # hostPath volumes ignore fsGroup: chown them first
    cluster_role: str = "loopline-monitor"  # patch on Models, bound per monitor
    # NetworkPolicyPeers besides the Model's model servers (the operator, Prometheus).
    ingress_peers: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError(
                "the runtime image is not set (LOOPLINE_OPERATOR_RUNTIME_IMAGE): cluster drift "
                "monitors run `loopline monitor serve` from it"
            )
        if not self.tracking_uri:
            raise ValueError(
                "no MLflow tracking URI for the drift monitors (set "
                "LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI): they load the champion's reference"
            )
        for peer in self.ingress_peers:
            if not peer or any(not selector for selector in peer.values()):
                raise ValueError(
                    f"monitor ingress peer {peer!r}: an empty peer or selector admits every pod "
                    "or namespace; name them"
                )


def monitor_name(model: str) -> str:
    """`<model>-monitor`: the Deployment, Service, claim and NetworkPolicy (a Service name
    is a DNS label of at most 63 characters, so the Model's name may have 55)."""
    if not _DNS_LABEL.match(model):
        raise ValueError(f"Model name {model!r} is not a DNS label (lower case, digits, '-')")
    name = f"{model}{SUFFIX}"
    if len(name) > _MAX_LABEL:
        raise ValueError(
            f"Model name {model!r} is too long for a drift monitor: its Service {name!r} would "
            f"have {len(name)} characters, at most {_MAX_LABEL} are allowed (Model names of "
            f"at most {_MAX_LABEL - len(SUFFIX)} characters can have a monitor)"
        )
    return name


def account_name(model: str) -> str:
    """The monitor's ServiceAccount; the admission policy derives the Model from it."""
    monitor_name(model)  # the same checks
    return f"{model}{ACCOUNT_SUFFIX}"


def labels(model: str) -> dict[str, str]:
    return {**MANAGED_BY, MODEL_LABEL: model, COMPONENT_LABEL: COMPONENT}


def selector(model: str) -> dict[str, str]:
    return {MODEL_LABEL: model, COMPONENT_LABEL: COMPONENT}


def service_url(namespace: str, model: str) -> str:
    """Where pods reach the monitor: the Service's cluster DNS name."""
    return f"http://{monitor_name(model)}.{namespace}.svc:{PORT}"


def status_url(cluster_ip: str, port: int = PORT) -> str:
    """Where the operator reaches the monitor: the Service's ClusterIP, routed wherever the
    operator runs (in a pod, or on the host of the local node), while cluster DNS names
    resolve only inside pods."""
    if not cluster_ip or cluster_ip == "None":
        raise ValueError(f"monitor Service has no ClusterIP ({cluster_ip!r})")
    host = f"[{cluster_ip}]" if ":" in cluster_ip else cluster_ip
    return f"http://{host}:{port}"


def monitor_env(desired: MonitorDesired, tracking_uri: str) -> dict[str, str]:
    """The monitor's settings in a pod: every address, its fixed port, the state volume, and
    the in-cluster Kubernetes client (the pod's ServiceAccount token)."""
    return monitor_settings(
        desired,
        host="0.0.0.0",
        port=PORT,
        kubeconfig="",
        tracking_uri=tracking_uri,
        state_dir=STATE_DIR,
    )


def _container_env(
    desired: MonitorDesired, config: MonitorPodConfig, token_digest: str | None
) -> list[dict[str, Any]]:
    plain = {
        **monitor_env(desired, config.tracking_uri),
        "MLFLOW_TRACKING_URI": config.tracking_uri,
        "LOOPLINE_STATE_DIR": STATE_MOUNT,
        "LOOPLINE_CACHE_DIR": "/tmp/loopline-cache",
        "HOME": "/tmp",
    }
    if token_digest:
        plain[DIGEST_ENV] = token_digest
    return [{"name": k, "value": v} for k, v in plain.items()] + token_env(desired.name)


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME}, "timeoutSeconds": 5, **timing}


def build_deployment(
    desired: MonitorDesired,
    config: MonitorPodConfig,
    *,
    token_digest: str | None = None,
    reload: str = "",
) -> dict[str, Any]:
    """The monitor's Deployment. `token_digest` is the digest of the token in the Model's
    Secret (None while unknown); a new `reload` stamp restarts the pod, which loads the
    champion's reference as it starts."""
    name = monitor_name(desired.name)
    annotations = {CHAMPION_ANNOTATION: desired.champion_version}
    if reload:
        annotations[RELOAD_ANNOTATION] = reload
    container: dict[str, Any] = {
        "name": COMPONENT,
        "image": config.image,
        "imagePullPolicy": config.pull_policy,
        "command": ["loopline", "monitor", "serve"],
        "args": [
            f"--model={desired.name}",
            f"--namespace={desired.namespace}",
            "--host=0.0.0.0",
            f"--port={PORT}",
            f"--state-dir={STATE_DIR}",
        ],
        "env": _container_env(desired, config, token_digest),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "livenessProbe": _probe(
            "/healthz", initialDelaySeconds=10, periodSeconds=20, failureThreshold=3
        ),
        # Ready once the champion's reference is loaded: before that there is nothing to
        # test samples against.
        "readinessProbe": _probe("/readyz", periodSeconds=10),
        "startupProbe": _probe("/healthz", periodSeconds=5, failureThreshold=60),
        "resources": RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "state", "mountPath": STATE_MOUNT},
        ],
    }
    pod: dict[str, Any] = {
        "serviceAccountName": account_name(desired.name),
        # The monitor's one Kubernetes call: the retraining annotation on its Model.
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
            {"name": "state", "persistentVolumeClaim": {"claimName": name}},
        ],
    }
    if config.permissions_init:
        pod["initContainers"] = [permissions_init_container(config.image, "state", STATE_MOUNT)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": desired.namespace, "labels": labels(desired.name)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(desired.name)},
            "template": {
                "metadata": {"labels": labels(desired.name), "annotations": annotations},
                "spec": pod,
            },
        },
    }


def build_service(namespace: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": monitor_name(model), "namespace": namespace, "labels": labels(model)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(model),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def build_state_claim(namespace: str, model: str, config: MonitorPodConfig) -> dict[str, Any]:
    return build_claim(
        namespace, monitor_name(model), config.volume_size, config.storage_class, labels(model)
    )


def build_service_account(namespace: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": account_name(model), "namespace": namespace, "labels": labels(model)},
        # Only the monitor's pod mounts its token (the Deployment asks for it).
        "automountServiceAccountToken": False,
    }


def build_role_binding(namespace: str, model: str, cluster_role: str) -> dict[str, Any]:
    """Binds the monitor ClusterRole (patch on Models) to this monitor's ServiceAccount in
    the Model's namespace; the admission policy narrows the patch to its own Model's
    retraining annotations."""
    if not cluster_role:
        raise ValueError("the monitor ClusterRole's name is empty")
    name = account_name(model)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(model)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def server_peer(model: str, *, seldon_namespace: str | None = None) -> dict[str, Any]:
    """The Model's model server pods as a NetworkPolicyPeer: the operator's own server pods
    (same namespace), or, with Seldon, the pods of the Model's Server
    (`seldon-server-name: <model>-server`) in Seldon's namespace."""
    if seldon_namespace is None:
        return {"podSelector": {"matchLabels": {MODEL_LABEL: model, COMPONENT_LABEL: "server"}}}
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": seldon_namespace}},
        "podSelector": {"matchLabels": {"seldon-server-name": f"{model}-server"[:_MAX_LABEL]}},
    }


def build_network_policy(
    namespace: str, model: str, config: MonitorPodConfig, servers: dict[str, Any]
) -> dict[str, Any]:
    """Ingress to the monitor's port from the Model's model servers (`servers`, samples) and
    the configured peers (the operator: status and reference; Prometheus: metrics) only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": monitor_name(model), "namespace": namespace, "labels": labels(model)},
        "spec": {
            "podSelector": {"matchLabels": selector(model)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [servers, *config.ingress_peers],
                    "ports": [{"port": PORT, "protocol": "TCP"}],
                }
            ],
        },
    }
