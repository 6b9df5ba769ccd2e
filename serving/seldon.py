"""The `seldon` serving backend's desired state: Seldon Core 2 objects as pure functions.

The operator applies what these return; nothing here talks to a cluster.

- `build_server`: a `Server` (mlops.seldon.io/v1alpha1) on Seldon's `mlserver` ServerConfig
  whose `mlserver` container runs the Loopline runtime image (code only, no model inside). It
  advertises the `loopline` capability and sets `MLSERVER_MODEL_IMPLEMENTATION`, so every model
  scheduled on it is served by `LooplineRuntime`.
- `build_model`: one Seldon `Model` per registered version, `storageUri` pointing at the MLflow
  artifact folder of that version (the agent downloads it; `load_bundle` reads the folder),
  `requirements: [loopline]` so it lands only on a Loopline server. Seldon's agent loads it
  into MLServer as `<seldon model>_<seldon generation>` (e.g. `drill-ae-v7_1`), a name that
  says neither the Loopline Model nor the registry version, so the Model's `parameters` (which
  the agent copies into `parameters.extra` of the model settings) tell the runtime both: its
  `loopline_*` series carry `model=<Loopline Model>` and `version=<registry version>`, the
  labels the operator judges a canary by.
- `build_experiment`: an `Experiment` splitting traffic between champion and canary by
  weight, or mirroring a share of it to a shadow version (answers discarded).
- `build_server_network_policy`: a NetworkPolicy on the Server's pods that admits only the
  ports Seldon's components use (`SERVER_OPEN_PORTS`). MLServer in a Seldon Server runs
  Seldon's own entry point, and Seldon's agent (same pod, over loopback) drives its repository
  API without a token, so MLServer's own ports (9000 HTTP, 9500 gRPC) and rclone's remote
  control (5572) must be unreachable from other pods: a pod that reached them could unload the
  model or point rclone anywhere.
"""

from __future__ import annotations

import re
from typing import Any

SELDON_API_VERSION = "mlops.seldon.io/v1alpha1"
CAPABILITY = "loopline"
SERVER_CONFIG = "mlserver"
CONTAINER = "mlserver"
RUNTIME = "loopline.serving.runtime.LooplineRuntime"
# The runtime image's entry point is `loopline` (the operator and the monitor run from the same
# image), so the Server's container names MLServer's command itself: serve the folder Seldon's
# agent fills.
MLSERVER_COMMAND = ["/bin/sh", "-c", 'exec mlserver start "$MLSERVER_MODELS_DIR"']
MANAGED_BY = {"app.kubernetes.io/managed-by": "loopline"}
# The label Seldon's controller puts on every pod of a Server (value: the Server's name).
SERVER_POD_LABEL = "seldon-server-name"
# Ports of a Server pod (Seldon's `mlserver` ServerConfig) that other pods may reach: the
# agent's inference reverse proxy (HTTP 9001, gRPC 9501) that seldon-mesh routes to, the
# agent's metrics (9006) and readiness (9008) ports, and MLServer's metrics (8082).
SERVER_OPEN_PORTS = (9001, 9501, 9006, 9008, 8082)
# MLServer's Prometheus port and path (its defaults; Seldon's `mlserver` ServerConfig keeps
# them): the runtime's `loopline_*` series are served there, beside MLServer's own.
MLSERVER_METRICS_PORT = 8082
METRICS_PATH = "/metrics"
# The `ServingSettings` fields a Seldon Model's `parameters` set (see `build_model`).
MODEL_NAME_PARAMETER = "model_name"
VERSION_PARAMETER = "version_label"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _name(value: str, field: str) -> str:
    if len(value) > 63 or not _DNS1123.match(value):
        raise ValueError(
            f"{field} {value!r} is not a DNS-1123 label (lowercase letters, digits, '-', <= 63)"
        )
    return value


def _meta(name: str, namespace: str, labels: dict[str, str] | None) -> dict[str, Any]:
    return {
        "name": _name(name, "name"),
        "namespace": namespace,
        "labels": {**MANAGED_BY, **(labels or {})},
    }


def model_object_name(model: str, version: str) -> str:
    """The Seldon Model name of one version: `<model>-v<version>`."""
    return _name(f"{model}-v{version}", "model/version")


def build_server(
    name: str,
    namespace: str,
    *,
    image: str,
    replicas: int = 1,
    env: dict[str, str] | None = None,
    env_from_secrets: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Seldon `Server` running the Loopline runtime image. `env_from_secrets` are container
    env entries with a `valueFrom` (the Model's token: never a literal value in the spec)."""
    if not image:
        raise ValueError("image is empty: the Loopline runtime image to run")
    if replicas < 0:
        raise ValueError(f"replicas {replicas}: must be >= 0")
    variables = {"MLSERVER_MODEL_IMPLEMENTATION": RUNTIME, **(env or {})}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": list(MLSERVER_COMMAND),
        "env": [{"name": k, "value": v} for k, v in sorted(variables.items())],
    }
    for entry in env_from_secrets or []:
        if "value" in entry or "valueFrom" not in entry:
            raise ValueError(
                f"env_from_secrets entry {entry.get('name')!r}: needs valueFrom and no literal "
                "value (a secret in the Server spec would be readable by anyone who can get it)"
            )
        container["env"].append(entry)
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": SELDON_API_VERSION,
        "kind": "Server",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "serverConfig": SERVER_CONFIG,
            "replicas": replicas,
            "extraCapabilities": [CAPABILITY],
            "podSpec": {"containers": [container]},
        },
    }


def build_model(
    model: str,
    version: str,
    namespace: str,
    *,
    storage_uri: str,
    server: str,
    replicas: int = 1,
    memory: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Seldon `Model` for one registered version, pinned to a Loopline server; its
    parameters name the Loopline Model and the version for the runtime's metrics and samples."""
    if not storage_uri:
        raise ValueError("storage_uri is empty: the MLflow artifact folder of the version")
    spec: dict[str, Any] = {
        "storageUri": storage_uri,
        "server": _name(server, "server"),
        "requirements": [CAPABILITY],
        "replicas": replicas,
        "parameters": [
            {"name": MODEL_NAME_PARAMETER, "value": model},
            {"name": VERSION_PARAMETER, "value": version},
        ],
    }
    if memory:
        spec["memory"] = memory
    return {
        "apiVersion": SELDON_API_VERSION,
        "kind": "Model",
        "metadata": _meta(
            model_object_name(model, version),
            namespace,
            {"loopline.dev/model": model, "loopline.dev/version": version, **(labels or {})},
        ),
        "spec": spec,
    }


def build_experiment(
    model: str,
    namespace: str,
    *,
    champion: str,
    canary: str | None = None,
    canary_weight: int = 0,
    shadow: str | None = None,
    shadow_percent: int = 0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Champion/canary split (weights sum to 100) and/or a mirrored shadow.

    `champion`, `canary` and `shadow` are registry versions; the objects they name are the
    Seldon Models `build_model` makes. The champion is the experiment's `default`, so the
    model's endpoint keeps answering when the Experiment is deleted.
    """
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight {canary_weight}: must be within 0..100")
    if not 0 <= shadow_percent <= 100:
        raise ValueError(f"shadow_percent {shadow_percent}: must be within 0..100")
    if canary_weight and not canary:
        raise ValueError("canary_weight > 0 needs a canary version")
    if shadow_percent and not shadow:
        raise ValueError("shadow_percent > 0 needs a shadow version")
    if not canary and not shadow:
        raise ValueError("an experiment needs a canary or a shadow version")
    default = model_object_name(model, champion)
    candidates = [{"name": default, "weight": 100 - canary_weight}]
    if canary:
        candidates.append({"name": model_object_name(model, canary), "weight": canary_weight})
    spec: dict[str, Any] = {"default": default, "candidates": candidates}
    if shadow:
        spec["mirror"] = {"name": model_object_name(model, shadow), "percent": shadow_percent}
    return {
        "apiVersion": SELDON_API_VERSION,
        "kind": "Experiment",
        "metadata": _meta(
            _name(model, "model"), namespace, {"loopline.dev/model": model, **(labels or {})}
        ),
        "spec": spec,
    }


def build_server_network_policy(
    server: str,
    namespace: str,
    *,
    open_ports: tuple[int, ...] = SERVER_OPEN_PORTS,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A NetworkPolicy admitting ingress to the Server's pods on `open_ports` only (from any
    source: seldon-mesh and Prometheus live where the cluster puts them). Every other port of
    the pod, MLServer's unguarded repository API among them, is closed to other pods; the
    agent reaches MLServer over loopback, which NetworkPolicies do not filter."""
    if not open_ports:
        raise ValueError("open_ports is empty: the Server's inference ports must stay reachable")
    bad = [p for p in open_ports if not 0 < p < 65536]
    if bad:
        raise ValueError(f"open_ports {bad}: ports are 1-65535")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(server, namespace, labels),
        "spec": {
            "podSelector": {"matchLabels": {SERVER_POD_LABEL: server}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": p, "protocol": "TCP"} for p in sorted(open_ports)]}],
        },
    }
