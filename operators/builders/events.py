"""The core/v1 Event the operator posts about an object (pure): one per decision or phase
change, named after the object so `kubectl describe` and `kubectl get events` list it there."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopline.operators.builders.model_plan import Event
from loopline.types.common import GROUP, VERSION

COMPONENT = "loopline-operator"


def event_body(obj: dict[str, Any], event: Event, now: datetime) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": obj.get("kind", "Model"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": event.reason,
        "message": event.message[:1024],  # the API server's limit
        "type": event.type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
