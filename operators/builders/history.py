"""Turn what the reconciler decided into ledger entries (pure): who acted and on what evidence.

The operator records a decision where it makes it (`Work.decide`); this module holds what
those places share: the actors, the evidence of a retraining request and of a canary's
readings, and who wrote a Model's spec as far as the API server can tell. It keeps
`managedFields` (the field manager and its operation), not the authenticated user, so a spec
change names the tool (`kubectl-client-side-apply`, `helm`, ...) that wrote it; approvals,
which must name a person, come from ModelApproval objects instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.operators.builders.serving import ServingObserved
from loopline.types.common import Trigger
from loopline.types.history import (
    Actor,
    ActorKind,
    ApprovalDecision,
    Decision,
    DecisionKind,
    ModelApprovalSpec,
)
from loopline.types.monitor import RetrainReason
from loopline.types.status import HistoryEntry, RetrainingStatus

OPERATOR = Actor(kind=ActorKind.OPERATOR, name="loopline-operator")


@dataclass(frozen=True)
class ApprovalObserved:
    """A ModelApproval naming this Model, as the runtime read it."""

    name: str
    spec: ModelApprovalSpec
    created: datetime

    @property
    def approved(self) -> bool:
        return self.spec.decision == ApprovalDecision.APPROVED


def spec_actor(managed_fields: Sequence[Mapping[str, Any]] | None) -> Actor:
    """Who last wrote the spec, as `managedFields` tells: the newest entry owning a field
    under `spec` of the main resource (not status)."""
    best: Mapping[str, Any] | None = None
    for entry in managed_fields or ():
        if entry.get("subresource") or "f:spec" not in (entry.get("fieldsV1") or {}):
            continue
        if best is None or str(entry.get("time") or "") >= str(best.get("time") or ""):
            best = entry
    if best is None:
        return Actor(kind=ActorKind.USER, name="", detail="no field manager recorded")
    manager = str(best.get("manager") or "")
    return Actor(
        kind=ActorKind.USER,
        name=manager,
        detail=f"field manager {manager!r}, operation {best.get('operation') or '-'}",
    )


def request_actor(model: str, request: RetrainingStatus) -> Actor:
    """Who asked for a retraining: the Model's monitor, the Pipeline's schedule, or someone
    who annotated the Model (whose name the annotation does not keep)."""
    if request.trigger == Trigger.DRIFT:
        return Actor(kind=ActorKind.MONITOR, name=f"{model}-loopline-monitor")
    if request.trigger == Trigger.SCHEDULE:
        return Actor(kind=ActorKind.SCHEDULER, name="pipeline schedule")
    return Actor(kind=ActorKind.USER, name="", detail="the loopline.dev/retrain annotation")


def request_evidence(request: RetrainingStatus) -> dict[str, Any]:
    reason = RetrainReason.parse(request.reason)
    evidence: dict[str, Any] = {"requestId": request.request_id, "trigger": request.trigger.value}
    if reason is not None:
        evidence.update(
            {
                "features": list(reason.features),
                "pValues": dict(reason.p_values),
                "windowEnd": reason.window_end,
                "driftStart": reason.drift_start,
            }
        )
    elif request.reason:
        evidence["reason"] = request.reason
    return {k: v for k, v in evidence.items() if v not in (None, [], {})}


def readings(serving: ServingObserved | None) -> dict[str, Any]:
    """The traffic counters the canary was judged on (none when the backend reads none)."""
    if serving is None:
        return {}
    found: dict[str, Any] = {}
    for role, stats in (("champion", serving.champion_stats), ("canary", serving.canary_stats)):
        if stats is None:
            continue
        found[role] = {
            "requests": stats.requests,
            "serverErrors": stats.server_errors,
            "rows": stats.rows,
            "fallbackRows": stats.fallback_rows,
            "anomalyRows": stats.anomaly_rows,
        }
    return found


def approver(approval: ApprovalObserved) -> Actor:
    return Actor(
        kind=ActorKind.USER,
        name=approval.spec.approver,
        detail=f"ModelApproval {approval.name} (identity checked by the API server)",
    )


def deleted(at: datetime, generation: int, champion: str | None) -> Decision:
    """The last entry of a Model: it was deleted, and what served until then."""
    return Decision(
        at=at,
        kind=DecisionKind.DELETED,
        actor=OPERATOR,
        version=champion,
        generation=generation,
        outcome="deleted",
        message="the Model was deleted; its history is kept",
    )


def alias_decision(entry: HistoryEntry) -> Decision:
    """The ledger entry of a champion alias the operator put back."""
    return Decision(
        at=entry.at,
        kind=DecisionKind.ALIAS_RESTORED,
        actor=OPERATOR,
        version=entry.restored,
        outcome="restored",
        message=entry.message,
        evidence={"found": entry.found},
    )
