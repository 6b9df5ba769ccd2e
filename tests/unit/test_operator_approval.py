"""Human approval in the Model reconciler (pure): a challenger waits for a person when the
Model asks for it, and only a decision about the current request moves it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from loopline.cli.approval import awaiting_problem, build_approval
from loopline.operators.builders.approval import consults_approvals
from loopline.operators.builders.decisions import decisions_of
from loopline.operators.builders.model import ModelPlan, reconcile_model
from loopline.operators.builders.model_plan import ApprovalRecord
from loopline.operators.builders.serving import ServingObserved
from loopline.types.approval import ApprovalState, ModelApprovalSpec, Verdict
from loopline.types.common import RETRAIN_ANNOTATION
from loopline.types.runs import RunPhase
from loopline.types.status import ModelPhase, ModelStatus, RolloutOutcome
from tests.unit.test_operator_builders import CTX, T0, _obs, _result, _spec, _to_serving

REQUIRED = _spec(
    promotion={"approval": "Required", "approvalTimeoutSeconds": 3600},
    serving={"canary": {"steps": [20, 100], "stepSeconds": 30}},
)
NOTES = {RETRAIN_ANNOTATION: "r2"}
UP = ServingObserved(ready=True, champion_version="1")


def _awaiting(spec: Any = REQUIRED) -> tuple[ModelPlan, Any]:
    """Version 1 serving; a retraining run registers version 2, which passes the gate."""
    base = _to_serving(ModelStatus())
    plan = reconcile_model(_obs(base.status, spec=spec, annotations=NOTES), CTX)
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="2", promoted=True, metrics={"f1": 0.93})
    obs = _obs(plan.status, spec=spec, annotations=NOTES, run=done, serving=UP)
    return reconcile_model(obs, CTX), obs


def _decide(
    plan: ModelPlan,
    *approvals: ApprovalRecord,
    spec: Any = REQUIRED,
    minutes: float = 5,
) -> ModelPlan:
    obs = _obs(
        plan.status, spec=spec, annotations=NOTES, serving=UP, now=T0 + timedelta(minutes=minutes)
    )
    return reconcile_model(replace(obs, approvals=approvals), CTX)


def _approval(
    plan: ModelPlan, decision: str, who: str, *, name: str = "a1", minutes: float = 1, **spec: str
) -> ApprovalRecord:
    pending = plan.status.approval
    assert pending is not None
    fields = {
        "model": "drill-ae",
        "version": pending.version,
        "request": pending.request,
        "decision": decision,
        "approver": who,
        "reason": f"{decision} by {who}",
        **spec,
    }
    return ApprovalRecord(
        name=name,
        spec=ModelApprovalSpec.model_validate(fields),
        created_at=T0 + timedelta(minutes=minutes),
    )


def test_a_challenger_that_passed_the_gate_waits_with_its_evidence() -> None:
    plan, obs = _awaiting()
    status = plan.status
    assert status.phase == ModelPhase.AWAITING_APPROVAL
    assert "loopline approve|reject plant/drill-ae --version 2" in status.message
    assert status.rollout is None  # nothing of version 2 serves
    assert status.champion is not None
    assert status.champion.version == "1"
    assert plan.serving is not None
    assert plan.serving.canary_version is None
    approval = status.approval
    assert approval is not None
    assert approval.state == ApprovalState.PENDING
    assert (approval.version, approval.champion) == ("2", "1")
    assert approval.metrics == {"f1": 0.93}
    decisions = decisions_of(obs, plan)
    requested = next(d for d in decisions if d.kind == "ApprovalRequested")
    assert requested.evidence["metrics"] == {"f1": 0.93}
    assert requested.evidence["request"] == approval.request


def test_an_approval_of_the_current_request_starts_the_canary_in_the_approvers_name() -> None:
    plan, _ = _awaiting()
    approved = _decide(plan, _approval(plan, "Approve", "system:serviceaccount:plant:alice"))
    status = approved.status
    assert status.rollout is not None
    assert (status.rollout.version, status.rollout.weight) == ("2", 20)
    assert status.approval is not None
    assert status.approval.state == ApprovalState.APPROVED
    assert status.approval.decided_by == "system:serviceaccount:plant:alice"
    assert status.approval.approval == "a1"
    assert [(m.name, m.applied) for m in approved.approval_marks] == [("a1", True)]
    obs = _obs(plan.status, spec=REQUIRED, serving=UP, now=T0 + timedelta(minutes=5))
    decision = next(d for d in decisions_of(obs, approved) if d.kind == "Approved")
    assert decision.actor == "system:serviceaccount:plant:alice"
    assert decision.version == "2"


def test_a_rejection_keeps_the_champion_and_says_why_version_2_is_not_serving() -> None:
    plan, _ = _awaiting()
    rejected = _decide(plan, _approval(plan, "Reject", "bob"))
    status = rejected.status
    assert status.phase == ModelPhase.SERVING
    assert "version 2 not promoted: rejected by bob: Reject by bob" in status.message
    assert status.rollout is None
    assert status.challenger is None
    assert status.champion is not None
    assert status.champion.version == "1"
    run = next(r for r in status.runs if r.model_version == "2")
    assert run.rollout_result is not None
    assert run.rollout_result.outcome == RolloutOutcome.REJECTED
    assert "ApprovalRejected" in [e.reason for e in rejected.events]


def test_decisions_about_another_version_or_request_do_not_count() -> None:
    plan, _ = _awaiting()
    stale = _approval(plan, "Approve", "alice", name="old", request="0123456789abcdef")
    other = _approval(plan, "Approve", "alice", name="v1", version="1")
    still = _decide(plan, stale, other)
    assert still.status.phase == ModelPhase.AWAITING_APPROVAL
    assert still.status.rollout is None
    marks = {m.name: m for m in still.approval_marks}
    assert not marks["old"].applied
    assert "is not the current one" in marks["old"].message
    assert "version 1 does not await approval" in marks["v1"].message


def test_the_first_decision_wins() -> None:
    plan, _ = _awaiting()
    no = _approval(plan, "Reject", "bob", name="no", minutes=1)
    yes = _approval(plan, "Approve", "alice", name="yes", minutes=2)
    decided = _decide(plan, yes, no)
    assert decided.status.approval is not None
    assert decided.status.approval.state == ApprovalState.REJECTED
    marks = {m.name: m for m in decided.approval_marks}
    assert marks["no"].applied
    assert not marks["yes"].applied


def test_a_newer_challenger_expires_the_older_request() -> None:
    plan, _ = _awaiting()
    first = plan.status.approval
    assert first is not None
    notes = {RETRAIN_ANNOTATION: "r3"}
    started = reconcile_model(_obs(plan.status, spec=REQUIRED, annotations=notes, serving=UP), CTX)
    done = _result(started, RunPhase.SUCCEEDED, modelVersion="3", promoted=True)
    later = T0 + timedelta(minutes=10)
    obs = _obs(started.status, spec=REQUIRED, annotations=notes, run=done, serving=UP, now=later)
    newer = reconcile_model(replace(obs, approvals=(_approval(plan, "Approve", "alice"),)), CTX)
    approval = newer.status.approval
    assert approval is not None
    assert (approval.version, approval.state) == ("3", ApprovalState.PENDING)
    assert approval.request != first.request
    assert newer.status.rollout is None  # the approval of version 2 promotes nothing
    assert "ApprovalExpired" in [e.reason for e in newer.events]
    old_run = next(r for r in newer.status.runs if r.model_version == "2")
    assert old_run.rollout_result is not None
    assert old_run.rollout_result.outcome == RolloutOutcome.SUPERSEDED


def test_the_timeout_rejects_or_keeps_waiting_as_the_spec_says() -> None:
    plan, _ = _awaiting()
    waiting = _decide(plan, minutes=90)
    assert waiting.status.phase == ModelPhase.AWAITING_APPROVAL
    assert "overdue" in waiting.status.message
    strict = _spec(
        promotion={"approval": "Required", "approvalTimeoutSeconds": 3600, "onTimeout": "Reject"}
    )
    plan, _ = _awaiting(strict)
    early = _decide(plan, spec=strict, minutes=30)
    assert early.status.phase == ModelPhase.AWAITING_APPROVAL
    late = _decide(plan, spec=strict, minutes=61)
    assert late.status.approval is not None
    assert late.status.approval.state == ApprovalState.TIMED_OUT
    assert late.status.phase == ModelPhase.SERVING
    assert late.status.champion is not None
    assert late.status.champion.version == "1"


def test_a_spec_that_stops_asking_releases_the_waiting_challenger() -> None:
    plan, _ = _awaiting()
    released = _decide(plan, spec=_spec(serving={"canary": {"steps": [20, 100]}}))
    assert released.status.approval is not None
    assert released.status.approval.state == ApprovalState.WAIVED
    assert released.status.rollout is not None
    assert released.status.rollout.version == "2"


def test_without_approval_a_challenger_rolls_out_at_once_and_approvals_are_not_read() -> None:
    plan, _ = _awaiting(_spec(serving={"canary": {"steps": [20, 100]}}))
    assert plan.status.approval is None
    assert plan.status.rollout is not None
    assert not consults_approvals(_spec(), plan.status)
    assert consults_approvals(REQUIRED, plan.status)


def _model(approval: dict[str, str] | None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "plant", "name": "drill-ae", "uid": "u-1"},
        "status": {"phase": "AwaitingApproval", **({"approval": approval} if approval else {})},
    }


def test_the_cli_decides_only_the_version_that_awaits_and_names_the_request() -> None:
    pending = {"version": "2", "request": "abc123", "state": "Pending"}
    assert awaiting_problem(_model(pending), "2") is None
    assert "version 2 does" in (awaiting_problem(_model(pending), "3") or "")
    done = {**pending, "state": "Approved"}
    assert "nothing of plant/drill-ae awaits approval" in (
        awaiting_problem(_model(done), "2") or ""
    )
    assert "is Approved" in (awaiting_problem(_model(done), "2") or "")
    assert "awaits approval" in (awaiting_problem(_model(None), "2") or "")
    body = build_approval(_model(pending), "2", Verdict.REJECT, "noisy", "alice")
    assert body["spec"] == {
        "model": "drill-ae",
        "version": "2",
        "request": "abc123",
        "decision": "Reject",
        "reason": "noisy",
        "approver": "alice",
    }
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    ModelApprovalSpec.model_validate(body["spec"])  # what the CRD schema accepts


def test_every_rollout_outcome_has_a_registry_tag() -> None:
    from loopline.operators.backends.registry import ROLLOUT_TAG_VALUES

    assert set(ROLLOUT_TAG_VALUES) == set(RolloutOutcome)
