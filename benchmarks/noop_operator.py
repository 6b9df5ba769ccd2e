"""The floor the operator benchmark compares with: a kopf operator that does nothing but answer.

On every Model event it writes the status the benchmark waits for (a phase, and the retraining
request when one is annotated) with one status patch through the same Kubernetes client the
real operator uses: kopf's watch, its executor and one API call per change, without reading
the Pipeline, deciding, recording history or posting Events. Started by bench_operator.py
with `kopf run --standalone`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

GROUP, VERSION = "loopline.dev", "v1alpha1"
_api: list[k8s.CustomObjectsApi] = []


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.scanning.disabled = True
    settings.posting.level = 40
    settings.execution.max_workers = int(os.environ.get("NOOP_WORKERS", "4"))
    _api.append(k8s.CustomObjectsApi(k8s_config.new_client_from_config(os.environ["KUBECONFIG"])))


@kopf.on.event(GROUP, VERSION, "models")
def answer(type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        return
    meta, status = body["metadata"], body.get("status") or {}
    request = (meta.get("annotations") or {}).get("loopline.dev/retrain")
    pending = (status.get("pendingRequest") or {}).get("requestId")
    if status.get("phase") and (not request or request == pending):
        return
    new: dict[str, Any] = {"phase": "Pending", "message": "no-op"}
    if request:
        new["pendingRequest"] = {
            "requestId": request,
            "trigger": "manual",
            "receivedAt": datetime.now(UTC).isoformat(),
        }
    _api[0].patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], "models", meta["name"], {"status": new}
    )
