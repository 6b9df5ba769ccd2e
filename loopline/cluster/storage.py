"""Volumes on the local cluster: a default StorageClass served by kube-controller-manager's
hostPath provisioner.

A PersistentVolumeClaim must bind on the local cluster as it does on a real one (a drift
monitor's state, the in-cluster MLflow's database), and a single-node cluster needs no CSI
driver for that: the controller-manager's built-in hostPath provisioner
(`--enable-hostpath-provisioner`, meant for exactly this: one node, development and tests)
makes a directory per claim under /tmp/hostpath_pv and removes it when the claim goes
(reclaim policy Delete). Its directories are created root-owned with mode 0750, so a pod that
runs as a non-root user chowns its volume once with an init container
(`loopline.operators.builders.volumes.permissions_init_container`).

`down` removes the directories of the volumes the cluster still had: they are outside the
state directory and would otherwise outlive the cluster.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

STORAGE_CLASS = "loopline-hostpath"
PROVISIONER = "kubernetes.io/host-path"
HOSTPATH_ROOT = Path("/tmp/hostpath_pv")  # where the provisioner puts every volume
CONTROLLER_MANAGER_FLAG = "--enable-hostpath-provisioner=true"


def storage_class() -> dict[str, Any]:
    """The cluster's default StorageClass."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            "labels": {"app.kubernetes.io/managed-by": "loopline"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_dirs(pv_list_json: str) -> list[Path]:
    """The provisioner's directories among the PersistentVolumes of `kubectl get pv -o json`
    (only those below HOSTPATH_ROOT: a hand-made hostPath volume is someone's data)."""
    dirs = []
    for pv in json.loads(pv_list_json).get("items") or []:
        path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path") or ""
        candidate = Path(path)
        if path and candidate.parent == HOSTPATH_ROOT and ".." not in candidate.parts:
            dirs.append(candidate)
    return dirs


def remove(dirs: list[Path]) -> None:
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
