"""Human approval of a challenger (spec.promotion.approval: Required), as a reconcile phase.

A challenger that passed the gate waits in `status.approval` (phase AwaitingApproval) instead
of starting its canary. A ModelApproval for exactly its version decides: Approved starts the
canary, Rejected drops the challenger and the champion keeps serving. Approvals of another
version are ignored (the evidence they judged is not the one waiting), and a newer challenger
replaces the one waiting. `approvalTimeoutSeconds` rejects it, or with `onTimeout: Wait`
records that the time passed and keeps waiting (pure).
"""

from __future__ import annotations

from loopline.operators.builders.history import ApprovalObserved, approver
from loopline.operators.builders.model_plan import ModelObservation, Work, end_rollout
from loopline.operators.builders.rollout import start_rollout
from loopline.types.history import DecisionKind
from loopline.types.promotion import Approval, ApprovalTimeoutAction
from loopline.types.status import (
    PendingApproval,
    RolloutOutcome,
    RolloutStatus,
    VersionRef,
)


def hold_for_approval(w: Work, obs: ModelObservation, challenger: VersionRef) -> None:
    """Park a challenger that passed the gate until a person decides."""
    waiting = w.awaiting
    if waiting is not None and waiting.version != challenger.version:
        w.decide(
            obs.now,
            DecisionKind.APPROVAL_EXPIRED,
            version=waiting.version,
            outcome="superseded",
            message=f"version {challenger.version} replaced it before anyone decided",
        )
    champion = w.champion
    w.awaiting = PendingApproval(
        version=challenger.version,
        run_id=challenger.run_id,
        since=obs.now,
        metrics=challenger.metrics,
        champion_version=champion.version if champion else None,
        champion_metrics=champion.metrics if champion else {},
    )
    w.event(
        "Normal",
        "AwaitingApproval",
        f"version {challenger.version} passed the gate and waits for approval "
        f"(loopline approve {obs.namespace}/{obs.name} --version {challenger.version})",
    )
    w.decide(
        obs.now,
        DecisionKind.AWAITING_APPROVAL,
        version=challenger.version,
        run_id=challenger.run_id,
        outcome="waiting",
        evidence={
            "challenger": dict(challenger.metrics),
            "championVersion": champion.version if champion else None,
            "champion": dict(champion.metrics) if champion else {},
        },
    )


def _decision_for(version: str, approvals: tuple[ApprovalObserved, ...]) -> ApprovalObserved | None:
    """The first decision on `version` (later ones are late: the version is gone by then)."""
    mine = [a for a in approvals if a.spec.version == version]
    return min(mine, key=lambda a: (a.created, a.name)) if mine else None


def _reject(w: Work, obs: ModelObservation, waiting: PendingApproval, message: str) -> None:
    gone = RolloutStatus(version=waiting.version, step_index=0, weight=0, step_started_at=obs.now)
    w.runs = end_rollout(w.runs, gone, RolloutOutcome.REJECTED, message, obs.now)
    w.challenger = None
    w.awaiting = None


def decide_approval(w: Work, obs: ModelObservation) -> None:
    """4a. The waiting challenger: approved, rejected, timed out, or still waiting."""
    waiting = w.awaiting
    if waiting is None:
        return
    promotion = obs.spec.promotion
    if promotion.approval != Approval.REQUIRED:
        w.decide(
            obs.now,
            DecisionKind.APPROVED,
            version=waiting.version,
            outcome="approval no longer required",
            message="spec.promotion.approval changed to None",
        )
        w.awaiting = None
        start_rollout(w, obs, waiting.version)
        return
    decision = _decision_for(waiting.version, obs.approvals)
    if decision is not None:
        who = approver(decision)
        kind = DecisionKind.APPROVED if decision.approved else DecisionKind.REJECTED
        w.decide(
            obs.now,
            kind,
            actor=who,
            version=waiting.version,
            run_id=waiting.run_id,
            outcome=decision.spec.decision.value,
            message=decision.spec.reason,
            evidence={"approval": decision.name, "waitingSince": waiting.since.isoformat()},
        )
        w.event(
            "Normal" if decision.approved else "Warning",
            kind.value,
            f"version {waiting.version} {kind.value.lower()} by {who.name}: "
            f"{decision.spec.reason or 'no reason given'}",
        )
        if decision.approved:
            w.awaiting = None
            start_rollout(w, obs, waiting.version)
        else:
            _reject(w, obs, waiting, f"rejected by {who.name}: {decision.spec.reason}")
        return
    timeout = promotion.approval_timeout_seconds
    if timeout is None or waiting.timed_out:
        return
    if (obs.now - waiting.since).total_seconds() < timeout:
        return
    message = f"no decision within {timeout} s"
    if promotion.on_timeout == ApprovalTimeoutAction.REJECT:
        w.decide(
            obs.now,
            DecisionKind.REJECTED,
            version=waiting.version,
            run_id=waiting.run_id,
            outcome="timed out",
            message=message,
        )
        w.event("Warning", "ApprovalTimedOut", f"version {waiting.version}: {message}; rejected")
        _reject(w, obs, waiting, message)
    else:
        w.decide(
            obs.now,
            DecisionKind.APPROVAL_TIMED_OUT,
            version=waiting.version,
            outcome="still waiting",
            message=message,
        )
        w.event("Warning", "ApprovalTimedOut", f"version {waiting.version}: {message}; waiting")
        w.awaiting = waiting.model_copy(update={"timed_out": True})
