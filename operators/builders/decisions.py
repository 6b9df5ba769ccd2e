"""The decisions a reconcile made, for the Model's history ledger (pure).

The reconciler already says what it decided as Events (TrainingStarted, ChallengerRejected,
CanaryStep, Promoted, CanaryAborted, ...); each becomes a decision here, with the evidence
the working state holds at that moment: the drift reason of a retraining request, the run's
trigger, data window and gate verdict, the metrics of both versions, the canary's traffic
readings, and what serves afterwards. Events expire within the hour; these do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from loopline.operators.builders.canary import VersionStats
from loopline.operators.builders.model_plan import Event, ModelObservation, ModelPlan
from loopline.types.common import Trigger
from loopline.types.history import MONITOR, OPERATOR, Decision, ServingState
from loopline.types.monitor import RetrainReason
from loopline.types.status import HistoryEntry, ModelStatus, RunRecord

# Events that are phase changes: the phase is in status; the ledger keeps decisions.
_PHASES = frozenset(
    {"Pending", "Training", "Validating", "Rollingout", "Serving", "AwaitingApproval"}
)
_RUN_ENDS = frozenset({"TrainingSucceeded", "ChallengerRejected", "TrainingFailed", "RunCancelled"})
_CANARY = frozenset({"CanaryStep", "CanaryAborted", "Promoted"})
# A person's decision: the actor is the user the API server authenticated (the approver).
_DECIDED = frozenset({"Approved", "ApprovalRejected"})
_APPROVAL = frozenset({*_DECIDED, "ApprovalRequested", "ApprovalTimedOut", "ApprovalWaived"})


def serving_state(status: ModelStatus) -> ServingState:
    champion = status.champion.version if status.champion else None
    rollout = status.rollout
    if rollout is not None and rollout.version != champion:
        return ServingState(champion=champion, canary=rollout.version, weight=rollout.weight)
    return ServingState(champion=champion)


def stats_evidence(stats: VersionStats | None) -> dict[str, float]:
    """A canary reading as numbers a person can check (rates, p95 latency, counts)."""
    if stats is None:
        return {}
    out = {"requests": stats.requests, "rows": stats.rows}
    for name, value in (
        ("errorRate", stats.error_rate),
        ("anomalyRate", stats.anomaly_rate),
        ("fallbackRate", stats.fallback_rate),
        ("latencyP95Seconds", stats.latency_quantile(0.95)),
    ):
        if value is not None and value != float("inf"):
            out[name] = round(value, 6)
    return out


def _run_evidence(run: RunRecord | None) -> dict[str, Any]:
    if run is None:
        return {}
    doc = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("generation", None)
    return doc


def _version_of(message: str) -> str | None:
    words = message.split()
    for i, word in enumerate(words[:-1]):
        if word == "version":
            return words[i + 1].rstrip(":;,")
    return None


def decisions_of(
    obs: ModelObservation, plan: ModelPlan, rejected: str | None = None
) -> list[Decision]:
    """One decision per Event of the plan that is not a phase change, with its evidence.

    `rejected` is the backend's refusal of what the plan asked for (the run is then marked
    rejected): no run started, so the refusal is recorded instead of TrainingStarted."""
    old, new = obs.status, plan.status
    state = serving_state(new)
    serving = obs.serving
    out: list[Decision] = []
    events = list(plan.events)
    if rejected is not None:
        events = [e for e in events if e.reason != "TrainingStarted"]
        events.append(Event("Warning", "BackendRejected", rejected))
    for event in events:
        if event.reason in _PHASES:
            continue
        actor, version = OPERATOR, _version_of(event.message)
        evidence: dict[str, Any] = {}
        if event.reason == "RetrainRequested":
            request = new.pending_request or new.retraining
            if request is not None:
                evidence = {"requestId": request.request_id, "trigger": request.trigger.value}
                reason = RetrainReason.parse(request.reason)
                if reason is not None:
                    evidence.update(reason.model_dump(mode="json", by_alias=True))
                    evidence.pop("trigger", None)
                    evidence["trigger"] = request.trigger.value
                actor = {Trigger.DRIFT: MONITOR, Trigger.SCHEDULE: OPERATOR}.get(
                    request.trigger, "manual"
                )
        elif event.reason == "TrainingStarted" and plan.submit is not None:
            spec = plan.submit
            evidence = {
                "runId": spec.run_id,
                "trigger": spec.trigger.value,
                "windowStart": spec.window_start.isoformat() if spec.window_start else None,
                "windowEnd": spec.window_end.isoformat() if spec.window_end else None,
                "driftStart": spec.drift_start.isoformat() if spec.drift_start else None,
                "parentVersion": spec.parent_version,
            }
        elif event.reason in _RUN_ENDS:
            run = new.runs[0] if new.runs else None
            evidence = _run_evidence(run)
            version = version or (run.model_version if run else None)
            evidence["challengerMetrics"] = obs.run.metrics if obs.run is not None else {}
            if old.champion is not None:
                evidence["champion"] = old.champion.version
                evidence["championMetrics"] = old.champion.metrics
        elif event.reason in _APPROVAL and new.approval is not None:
            approval = new.approval
            evidence = approval.model_dump(mode="json", by_alias=True, exclude_none=True)
            version = approval.version
            if event.reason in _DECIDED and approval.decided_by:
                actor = approval.decided_by
        elif event.reason == "ApprovalExpired" and old.approval is not None:
            evidence = {
                "request": old.approval.request,
                "requestedAt": old.approval.requested_at.isoformat(),
            }
            version = old.approval.version
        elif event.reason in _CANARY:
            rollout = old.rollout
            if rollout is not None:
                version = version or rollout.version
                evidence = {"weight": rollout.weight, "step": rollout.step_index}
            if serving is not None:
                evidence["championStats"] = stats_evidence(serving.champion_stats)
                evidence["canaryStats"] = stats_evidence(serving.canary_stats)
        out.append(
            Decision(
                at=obs.now,
                kind=event.reason,
                actor=actor,
                message=event.message,
                version=version,
                generation=obs.generation,
                uid=obs.uid,
                evidence={k: v for k, v in evidence.items() if v is not None},
                serving=state,
            )
        )
    return out


def spec_change(metadata: Mapping[str, Any], status: ModelStatus, now: datetime) -> Decision | None:
    """A decision for a spec the operator has not seen yet (generation ahead of
    status.observedGeneration): Created for the first, SpecChanged after; the actor is the
    field manager that last wrote the spec (client-chosen: `kubectl-client-side-apply`,
    `kubectl-edit`, ...; the authenticated user is in the API server's audit log)."""
    generation = int(metadata.get("generation", 1))
    if generation <= status.observed_generation:
        return None
    kind = "Created" if status.observed_generation == 0 else "SpecChanged"
    manager, when = spec_manager(metadata.get("managedFields") or [])
    return Decision(
        at=now,
        kind=kind,
        actor=manager or "unknown",
        message=f"generation {generation}" + (f" written at {when}" if when else ""),
        generation=generation,
        uid=metadata.get("uid"),
        evidence={"observedGeneration": status.observed_generation},
        serving=serving_state(status),
    )


def spec_manager(managed: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """The manager (and time) of the latest managedFields entry that owns fields of spec."""
    best: tuple[str, str] | None = None
    for entry in managed:
        fields = entry.get("fieldsV1") or {}
        if "f:spec" not in fields or entry.get("subresource"):
            continue
        when = str(entry.get("time") or "")
        if best is None or when >= best[1]:
            best = (str(entry.get("manager") or "unknown"), when)
    return (best[0], best[1] or None) if best else (None, None)


def deletion(metadata: Mapping[str, Any], now: datetime) -> Decision:
    """The Model's deletion, recorded by its cleanup (the ledger outlives the Model)."""
    return Decision(
        at=now,
        kind="Deleted",
        actor=OPERATOR,
        message=f"deleted (deletionTimestamp {metadata.get('deletionTimestamp', '-')}); "
        "serving, runs and the champion alias released",
        generation=metadata.get("generation"),
        uid=metadata.get("uid"),
        serving=ServingState(),
    )


def alias_decision(
    entry: HistoryEntry, metadata: Mapping[str, Any], status: ModelStatus
) -> Decision:
    """The operator put the registry's champion alias back (someone moved it in MLflow)."""
    return Decision(
        at=entry.at,
        kind=entry.reason,
        actor=OPERATOR,
        message=entry.message,
        version=entry.restored,
        generation=metadata.get("generation"),
        uid=metadata.get("uid"),
        evidence={k: v for k, v in {"found": entry.found}.items() if v is not None},
        serving=serving_state(status),
    )
