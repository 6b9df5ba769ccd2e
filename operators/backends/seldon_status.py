"""What a Model's Seldon objects say about its serving: the Seldon Models' readiness and the
`ServingObserved` the `seldon` backend reports, with a canary's traffic when it was read.

Pure: the backend (`operators.backends.seldon`) lists the objects and reads the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loopline.operators.backends.seldon_traffic import Traffic
from loopline.operators.builders.serving import MODEL_FAILED, ServingDesired, ServingObserved
from loopline.serving.seldon import model_object_name

# Model states Seldon's scheduler reports (in a condition's reason or message) once it has
# given up on a model, as opposed to one still loading.
FAILED_STATES = frozenset({"ModelFailed", "ScheduleFailed"})


@dataclass(frozen=True)
class Readiness:
    ready: bool
    failed: bool
    reason: str  # a condition reason when not ready (see operators/builders/serving.py)
    message: str


def model_readiness(obj: dict[str, Any] | None, name: str) -> Readiness:
    """A Seldon Model's readiness from its `Ready` condition, with why it is not ready in
    words a user can act on. Ready=False after a failure is `ModelFailed`; a Model still
    loading (or without a condition yet) is not a failure: it has no unhealthy reason."""
    if obj is None:
        return Readiness(False, False, "", f"Seldon Model {name} does not exist yet")
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return Readiness(True, False, "", f"Seldon Model {name} is Ready")
    if ready is None:
        return Readiness(False, False, "", f"waiting for Seldon Model {name} to be Ready")
    words = {str(c.get(k) or "") for c in conditions for k in ("reason", "message")}
    detail = ": ".join(str(ready.get(k)) for k in ("reason", "message") if ready.get(k))
    failed = bool(words & FAILED_STATES)
    message = f"Seldon Model {name} is not Ready" + (f" ({detail})" if detail else "")
    return Readiness(False, failed, MODEL_FAILED if failed else "", message)


def observed_of(
    ns: str, desired: ServingDesired, found: dict[str, dict[str, Any]]
) -> ServingObserved:
    """What serves `desired`, from the Seldon Models found (by name) in namespace `ns`."""
    champion_name = model_object_name(desired.name, desired.champion_version)
    champion = model_readiness(found.get(champion_name), champion_name)
    canary = None
    if desired.canary_version:
        canary_name = model_object_name(desired.name, desired.canary_version)
        canary = model_readiness(found.get(canary_name), canary_name)
    ready = champion.ready and (canary is None or canary.ready)
    waiting = [r for r in (champion, canary) if r is not None and not r.ready]
    # Only the champion's state makes the Model unhealthy; a failed canary is rolled back.
    seldon_name = f"{desired.name}.experiment" if desired.canary_version else desired.name
    return ServingObserved(
        ready=ready,
        champion_version=desired.champion_version,
        canary_version=desired.canary_version,
        canary_weight=desired.canary_weight,
        endpoints={
            "rest": f"http://seldon-mesh.{ns}/v2/models/{seldon_name}",
            "grpc": f"seldon-mesh.{ns}:80",
        },
        message="Seldon Models ready" if ready else "; ".join(r.message for r in waiting),
        reason=champion.reason,
        canary_healthy=False if canary is not None and canary.failed else None,
        canary_reason=canary.message if canary is not None and canary.failed else "",
    )


def with_traffic(observed: ServingObserved, traffic: Traffic) -> ServingObserved:
    """`observed` with the canary's traffic, which `decide_canary` then judges."""
    return replace(
        observed,
        champion_stats=traffic.champion,
        canary_stats=traffic.canary,
        message=f"{observed.message}; {traffic.note}" if traffic.note else observed.message,
    )
