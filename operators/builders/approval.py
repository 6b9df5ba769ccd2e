"""Human approval in a reconcile (pure): a challenger that passed the gate waits for a
person when the Model asks for it, and the ModelApprovals people created decide it.

A decision counts only for the request it names (`status.approval.request`), which is new for
every challenger: an approval given for version 7 cannot promote version 8, and a newer
challenger expires the request of an older one. The first decision made for a request wins;
later ones are marked not applied, with the reason, on their own status.
"""

from __future__ import annotations

from loopline.operators.builders.model_plan import (
    ApprovalMark,
    ApprovalRecord,
    ModelObservation,
    Work,
    end_version,
)
from loopline.types.approval import (
    ApprovalMode,
    ApprovalState,
    ApprovalStatus,
    TimeoutAction,
    Verdict,
    request_id,
)
from loopline.types.model import ModelSpec
from loopline.types.status import ModelStatus, RolloutOutcome, RolloutStatus


def consults_approvals(spec: ModelSpec, status: ModelStatus) -> bool:
    """Whether the reconcile must read the Model's ModelApprovals: it asks for approval, or a
    request is still pending (the spec may have stopped asking meanwhile)."""
    pending = status.approval is not None and status.approval.state == ApprovalState.PENDING
    return spec.promotion.approval == ApprovalMode.REQUIRED or pending


def approval_required(obs: ModelObservation) -> bool:
    return obs.spec.promotion.approval == ApprovalMode.REQUIRED


def start_rollout(w: Work, obs: ModelObservation, version: str) -> None:
    """The version's canary begins (at 100 % when there is no champion to compare with); a
    canary still running for an older version is superseded."""
    if w.rollout is not None and w.rollout.version != version:
        w.runs = end_version(
            w.runs,
            w.rollout.version,
            RolloutOutcome.SUPERSEDED,
            f"replaced by version {version} before its canary finished",
            obs.now,
            w.rollout.weight,
        )
    first_weight = obs.spec.serving.canary.steps[0] if w.champion else 100
    w.rollout = RolloutStatus(
        version=version, step_index=0, weight=first_weight, step_started_at=obs.now
    )


def request_approval(w: Work, obs: ModelObservation, version: str) -> None:
    """The challenger `version` passed the gate: ask a person, expiring an older request."""
    old = w.approval
    if old is not None and old.state == ApprovalState.PENDING and old.version != version:
        w.approval = old.model_copy(update={"state": ApprovalState.EXPIRED})
        w.runs = end_version(
            w.runs,
            old.version,
            RolloutOutcome.SUPERSEDED,
            f"version {version} passed the gate before anyone decided on it",
            obs.now,
        )
        w.event(
            "Normal",
            "ApprovalExpired",
            f"version {old.version}: no longer awaits approval, version {version} replaced it",
        )
    challenger, champion = w.challenger, w.champion
    w.approval = ApprovalStatus(
        version=version,
        request=request_id(obs.uid, version, obs.now),
        state=ApprovalState.PENDING,
        requested_at=obs.now,
        champion=champion.version if champion else None,
        metrics=challenger.metrics if challenger else {},
        champion_metrics=champion.metrics if champion else {},
    )
    w.event(
        "Normal",
        "ApprovalRequested",
        f"version {version} passed the gate and awaits approval: "
        f"loopline approve {obs.namespace}/{obs.name} --version {version}",
    )


def _reject(w: Work, obs: ModelObservation, pending: ApprovalStatus, message: str) -> None:
    w.challenger = None
    w.runs = end_version(w.runs, pending.version, RolloutOutcome.REJECTED, message, obs.now)


def _not_applied(a: ApprovalRecord, pending: ApprovalStatus | None) -> str:
    if pending is None:
        return "nothing awaits approval"
    if a.spec.version != pending.version:
        return f"version {a.spec.version} does not await approval (version {pending.version} does)"
    if a.spec.request != pending.request:
        return f"request {a.spec.request} is not the current one ({pending.request})"
    return "an earlier decision was applied"


def decide_approval(
    w: Work, obs: ModelObservation, approvals: tuple[ApprovalRecord, ...]
) -> list[ApprovalMark]:
    """Apply the first decision made for the pending request (or the timeout, or a spec that
    no longer asks for approval); say on every other unmarked ModelApproval why it did not
    count."""
    pending = w.approval if w.approval and w.approval.state == ApprovalState.PENDING else None
    marks: list[ApprovalMark] = []
    mine = sorted(
        (a for a in approvals if a.spec.model == obs.name and not a.message),
        key=lambda a: (a.created_at, a.name),
    )
    chosen = None
    if pending is not None:
        chosen = next(
            (
                a
                for a in mine
                if a.spec.request == pending.request and a.spec.version == pending.version
            ),
            None,
        )
    decided = w.approval.approval if w.approval is not None else None
    for a in mine:
        if a is chosen:
            continue
        if a.name == decided and w.approval is not None:  # applied; its mark was lost
            marks.append(ApprovalMark(a.name, True, w.approval.state.value.lower()))
        else:
            marks.append(ApprovalMark(a.name, False, _not_applied(a, pending)))
    if pending is None:
        return marks
    if not approval_required(obs):
        w.approval = pending.model_copy(update={"state": ApprovalState.WAIVED})
        w.event(
            "Normal",
            "ApprovalWaived",
            f"version {pending.version}: spec.promotion.approval is NotRequired now",
        )
        start_rollout(w, obs, pending.version)
        return marks
    if chosen is not None:
        spec = chosen.spec
        who = {
            "decided_by": spec.approver,
            "decided_at": chosen.created_at,
            "reason": spec.reason,
            "approval": chosen.name,
        }
        because = f": {spec.reason}" if spec.reason else ""
        if spec.decision == Verdict.APPROVE:
            w.approval = pending.model_copy(update={**who, "state": ApprovalState.APPROVED})
            w.event(
                "Normal", "Approved", f"version {spec.version} approved by {spec.approver}{because}"
            )
            start_rollout(w, obs, spec.version)
        else:
            w.approval = pending.model_copy(update={**who, "state": ApprovalState.REJECTED})
            message = f"rejected by {spec.approver}{because}"
            _reject(w, obs, pending, message)
            w.event("Warning", "ApprovalRejected", f"version {spec.version} {message}")
        marks.append(ApprovalMark(chosen.name, True, w.approval.state.value.lower()))
        return marks
    promotion = obs.spec.promotion
    waited = (obs.now - pending.requested_at).total_seconds()
    if (
        waited >= promotion.approval_timeout_seconds
        and promotion.on_timeout == TimeoutAction.REJECT
    ):
        message = f"no decision within {promotion.approval_timeout_seconds} s (onTimeout: Reject)"
        w.approval = pending.model_copy(
            update={"state": ApprovalState.TIMED_OUT, "decided_at": obs.now, "reason": message}
        )
        _reject(w, obs, pending, message)
        w.event("Warning", "ApprovalTimedOut", f"version {pending.version}: {message}")
    return marks


def awaiting_message(obs: ModelObservation, pending: ApprovalStatus) -> str:
    """The phase message of a Model whose challenger waits for a person."""
    since = pending.requested_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    message = (
        f"version {pending.version} passed the gate and awaits approval since {since} "
        f"(loopline approve|reject {obs.namespace}/{obs.name} --version {pending.version})"
    )
    waited = (obs.now - pending.requested_at).total_seconds()
    if waited >= obs.spec.promotion.approval_timeout_seconds:
        message += f"; overdue: waiting {int(waited)} s"
    return message
