"""What `loopline demo --cluster` puts on the real node, as data (pure; no cluster here).

The cluster mode runs the same acts as the local demo on a stack of pods: the chart
(`helm/loopline`, `values-local.yaml`: MLflow in the cluster, the `kubernetes` serving and
pipeline backends) with the images the demo pushed, a claim holding the Feast repository that
training Jobs mount (`operators.builders.kube_jobs.FEATURE_REPO_MOUNT`), and the plant's
landing pod, which keeps that claim mounted read-write: the demo streams the repository and
then the plant's landed rows into it through `kubectl exec`, the way any client outside the
cluster reaches a volume (no host path of the node is written).

The demo runs on the host, outside the cluster network's DNS: `reachable_url` turns the
in-cluster names the Model's status shows (`<service>.<namespace>.svc`) into the Services'
ClusterIPs, which kube-proxy routes from the host too.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loopline.demo.settings import DemoSettings
from loopline.operators.builders import kube_monitoring, kube_serving
from loopline.operators.builders.kube_jobs import FEATURE_REPO_MOUNT
from loopline.operators.builders.volumes import RUN_AS, build_claim, permissions_init_container

RELEASE = "loopline"
LANDING_POD = "plant-landing"
LANDING_CONTAINER = "landing"
REPO_VOLUME = "feature-repo"
# The operator's default (`LOOPLINE_OPERATOR_FEATURE_REPO_CLAIM`): training Jobs mount it.
FEATURE_REPO_CLAIM = "loopline-feature-repo"
FEATURE_REPO_SIZE = "2Gi"
MLFLOW_SERVICE = f"{RELEASE}-mlflow"
MLFLOW_PORT = 5000
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
MLFLOW_SELECTOR = "app.kubernetes.io/component=mlflow"
# The operator's reconcile interval in the demo, as locally (the chart's default is longer).
RECONCILE_INTERVAL = "2"
# Seconds the first champion may take at most: the first pulls of both images (1.4 and
# 6.2 GB) come before the first training run and the first model server.
SERVING_TIMEOUT = 1200.0
LOOP_TIMEOUT = 900.0

# Run by `python -c` in the landing pod: a tar archive on stdin, each member written next to
# its destination and renamed over it, so a training run reading a file sees the old or the
# new one, never half of one.
UNPACK_SCRIPT = """
import io, os, sys, tarfile
root = sys.argv[1]
with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:") as tar:
    for member in tar.getmembers():
        if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
            continue
        path = os.path.join(root, member.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
        with open(tmp, "wb") as out:
            out.write(tar.extractfile(member).read())
        os.replace(tmp, path)
        print(member.name, member.size)
"""

# Run in the landing pod once the repository is there: Feast's registry records the sources'
# absolute paths, so it must be applied at the path training pods mount the claim on.
APPLY_SCRIPT = """
import sys
from pathlib import Path
from loopline.data import features
features.apply(Path(sys.argv[1]))
print("applied", sys.argv[1])
"""


def cluster_settings(settings: DemoSettings) -> DemoSettings:
    """The demo's settings on the real node: longer waits (image pulls), and no historian:
    asynchronous inference needs a Redis the chart does not deploy (`asyncInference`)."""
    return settings.model_copy(
        update={
            "historian_burst": 0,
            "serving_timeout": max(settings.serving_timeout, SERVING_TIMEOUT),
            "loop_timeout": max(settings.loop_timeout, LOOP_TIMEOUT),
        }
    )


def chart_values(registry: str, runtime_tag: str, training_tag: str) -> dict[str, Any]:
    """Values over `values-local.yaml`: the images pushed to the node's registry (each by its
    content tag: the two images' tags differ) and the demo's reconcile interval."""
    if not registry or "/" in registry:
        raise ValueError(f"registry {registry!r}: a host:port, such as 127.0.0.1:5000")
    for name, tag in (("runtime_tag", runtime_tag), ("training_tag", training_tag)):
        if not tag:
            raise ValueError(f"{name} is empty: the images must be built first")
    runtime = {"tag": runtime_tag}
    return {
        "image": {"registry": registry, "tag": runtime_tag},
        "operator": {
            "image": runtime,
            "extraEnv": [
                {"name": "LOOPLINE_OPERATOR_RECONCILE_INTERVAL", "value": RECONCILE_INTERVAL}
            ],
        },
        "runtime": {"image": runtime},
        "mlflow": {"image": runtime},
        "training": {"image": {"tag": training_tag}},
    }


def feature_repo_claim(namespace: str) -> dict[str, Any]:
    """The claim training Jobs mount read-only (the cluster's default StorageClass)."""
    return build_claim(
        namespace,
        FEATURE_REPO_CLAIM,
        FEATURE_REPO_SIZE,
        labels={"app.kubernetes.io/part-of": "loopline-demo"},
    )


def landing_pod(namespace: str, image: str) -> dict[str, Any]:
    """The plant's landing pod: the claim mounted read-write at the path training pods mount
    it on, the pods' user owning it (an init container chowns the fresh hostPath volume)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": LANDING_POD,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": LANDING_POD,
                "app.kubernetes.io/part-of": "loopline-demo",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "initContainers": [permissions_init_container(image, REPO_VOLUME, FEATURE_REPO_MOUNT)],
            "containers": [
                {
                    "name": LANDING_CONTAINER,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": {
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "128Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    },
                    "volumeMounts": [{"name": REPO_VOLUME, "mountPath": FEATURE_REPO_MOUNT}],
                }
            ],
            "volumes": [
                {"name": REPO_VOLUME, "persistentVolumeClaim": {"claimName": FEATURE_REPO_CLAIM}}
            ],
        },
    }


def pack(root: Path, names: Iterable[str]) -> bytes:
    """A tar archive of `names` (paths relative to `root`), for `UNPACK_SCRIPT`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for name in names:
            tar.add(root / name, arcname=name, recursive=False)
    return buffer.getvalue()


def repo_files(root: Path) -> list[str]:
    """Every file of a repository, relative to it (what the first upload sends)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def service_key(host: str) -> tuple[str, str] | None:
    """(namespace, name) of an in-cluster Service host name, or None for another host."""
    parts = host.split(".")
    if (
        len(parts) >= 3
        and parts[2] == "svc"
        and (len(parts) == 3 or parts[3:] == ["cluster", "local"])
    ):
        return parts[1], parts[0]
    return None


def reachable_url(url: str, addresses: Mapping[tuple[str, str], str]) -> str:
    """`url` with an in-cluster Service name replaced by its ClusterIP from `addresses`
    ((namespace, name) -> IP); anything else unchanged. Takes URLs and bare `host:port`s
    (the gRPC endpoint)."""
    bare = "://" not in url
    parts = urlsplit(f"//{url}" if bare else url)
    host = parts.hostname or ""
    key = service_key(host)
    if key is None or key not in addresses:
        return url
    netloc = addresses[key] + (f":{parts.port}" if parts.port else "")
    replaced = parts._replace(netloc=netloc).geturl()
    return replaced.removeprefix("//") if bare else replaced


def mlflow_url(address: str) -> str:
    """MLflow's URL from the host: its Service's ClusterIP."""
    return f"http://{address}:{MLFLOW_PORT}"


# The pods Prometheus scrapes, by job (`loopline.demo.usage.JOBS`' keys): component label and
# metrics port. Debian's Prometheus has no Kubernetes discovery, so the demo writes the pods
# it finds to files Prometheus watches (file_sd), as it finds them.
SCRAPED = {
    "Metrics": (kube_serving.COMPONENT, kube_serving.METRICS_PORT),
    "Monitor": (kube_monitoring.COMPONENT, kube_monitoring.PORT),
}


def prometheus_files_config(folder: Path, interval: str = "1s") -> dict[str, Any]:
    """prometheus.yml whose targets are the files `scrape_targets` fills, one per job, named
    as the local demo's jobs so the same code reads the usage table."""
    from loopline.demo.usage import JOBS

    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": JOBS[key],
                "file_sd_configs": [
                    {"files": [str(folder / f"targets-{JOBS[key]}.json")], "refresh_interval": "1s"}
                ],
            }
            for key in SCRAPED
        ],
    }


def scrape_targets(
    pods: Iterable[Mapping[str, Any]], component: str, port: int
) -> list[dict[str, Any]]:
    """file_sd entries for the running, not terminating pods of `component` (pod objects as
    the API returns them): a canary's and a new champion's pods from the moment they have an
    address, each by its pod IP, labelled with namespace and pod."""
    found = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        labels = meta.get("labels") or {}
        if labels.get("loopline.dev/component") != component or meta.get("deletionTimestamp"):
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        found.append(
            {
                "targets": [f"{status['podIP']}:{port}"],
                "labels": {
                    "namespace": str(meta.get("namespace", "")),
                    "pod": str(meta.get("name", "")),
                },
            }
        )
    return sorted(found, key=lambda t: t["labels"]["pod"])


def restart_due(status: Mapping[str, Any], done: set[str]) -> str | None:
    """When to delete the operator pod (`restart_operator`), from the Model's status: `run`
    once the drift-triggered run is Running, `canary` once its version's canary is past its
    first step and not yet at 100 %; each once (`done`), None otherwise."""
    current = status.get("currentRun") or {}
    if (
        "run" not in done
        and current.get("trigger") == "drift"
        and current.get("phase") == "Running"
    ):
        return "run"
    rollout = status.get("rollout") or {}
    if (
        "canary" not in done
        and rollout.get("version")
        and int(rollout.get("stepIndex") or 0) >= 1
        and int(rollout.get("weight") or 0) < 100
    ):
        return "canary"
    return None
