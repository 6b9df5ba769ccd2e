"""Volumes of the pods the operator creates: the claim, and the one-off chown a fresh
hostPath volume needs.

Pods run as uid 10001 with no capabilities. A CSI volume honours the pod's `fsGroup`, but a
hostPath volume (the local cluster's provisioner, see `loopline.cluster.storage`) is created
root-owned with mode 0750 and ignores it: the pod could not write its own state. Where the
operator setting `volume_permissions_init` says so, the pod first runs an init container
that hands the volume's top directory to the pod's user (root in that container, with only
CAP_CHOWN, and nothing else in it runs).
"""

from __future__ import annotations

import re
from typing import Any

RUN_AS = 10001  # the images' user (docker/loopline.Dockerfile)
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


def build_claim(
    namespace: str,
    name: str,
    size: str,
    storage_class: str = "",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ReadWriteOnce PersistentVolumeClaim of `size` (empty class: the cluster's default)."""
    if not _QUANTITY.match(size):
        raise ValueError(f"volume size {size!r}: a Kubernetes quantity such as 1Gi or 500Mi")
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }


def permissions_init_container(
    image: str, volume: str, mount_path: str, uid: int = RUN_AS
) -> dict[str, Any]:
    """An init container that gives `volume` (mounted at `mount_path`) to `uid`."""
    return {
        "name": "volume-permissions",
        "image": image,
        "command": ["chown", f"{uid}:{uid}", mount_path],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": volume, "mountPath": mount_path}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
    }
