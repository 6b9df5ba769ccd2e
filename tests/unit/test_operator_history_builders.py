"""The decisions the pure Model reconciler records for the history, human approval as a
reconcile phase, and the questions asked of a ledger (`serving_at`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.operators.builders.history import ApprovalObserved, spec_actor
from loopline.operators.builders.history_query import select, serving_at
from loopline.operators.builders.model import ModelObservation, ModelPlan, reconcile_model
from loopline.operators.builders.runs import RunContext
from loopline.operators.builders.serving import ServingObserved
from loopline.types.common import RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION
from loopline.types.history import (
    ActorKind,
    ApprovalDecision,
    Decision,
    DecisionKind,
    ModelApprovalSpec,
)
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.runs import RunPhase, TrainingRunResult
from loopline.types.status import ModelStatus, RolloutOutcome

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CTX = RunContext(mlflow_tracking_uri="sqlite:///m.db", feature_repo="feature_repo")
PIPE = PipelineSpec.model_validate({"pipeline": "training"})
DRIFT = {
    RETRAIN_ANNOTATION: "drift-1",
    RETRAIN_REASON_ANNOTATION: '{"trigger":"drift","features":["vibration"],'
    '"pValues":{"vibration":0.001},"windowEnd":"2026-01-01T11:00:00+00:00"}',
}


def _spec(approval: str = "None", **promotion: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "task": "anomaly-detection",
            "pipelineRef": {"name": "training"},
            "serving": {"replicas": 1, "canary": {"steps": [20, 100], "stepSeconds": 60}},
            "monitoring": {"enabled": True, "retrainOnDrift": True},
            "promotion": {"approval": approval, **promotion},
        }
    )


def _obs(status: ModelStatus, spec: ModelSpec, now: datetime = T0, **kw: Any) -> ModelObservation:
    return ModelObservation(
        namespace="plant",
        name="drill-ae",
        uid="uid-1",
        generation=kw.pop("generation", 1),
        annotations=kw.pop("annotations", {}),
        spec=spec,
        status=status,
        pipeline=PIPE,
        pipeline_message="",
        run=kw.pop("run", None),
        serving=kw.pop("serving", None),
        now=now,
        **kw,
    )


def _kinds(plan: ModelPlan) -> list[DecisionKind]:
    return [d.kind for d in plan.decisions]


def _serving(champion: str, canary: str | None = None) -> ServingObserved:
    return ServingObserved(
        ready=True, champion_version=champion, canary_version=canary, endpoints={"rest": "x"}
    )


def _champion_one(spec: ModelSpec) -> tuple[ModelStatus, list[Decision]]:
    """Version 1 serving as champion, and the decisions that got it there."""
    kept: list[Decision] = []
    plan = reconcile_model(_obs(ModelStatus(), spec), CTX)
    kept += plan.decisions
    assert plan.status.current_run is not None
    done = TrainingRunResult(
        runId=plan.status.current_run.run_id,
        phase=RunPhase.SUCCEEDED,
        modelVersion="1",
        gatePassed=True,
        metrics={"f1": 0.8},
    )
    first = _spec()  # the first version never waits: nothing serves to protect
    plan = reconcile_model(_obs(plan.status, first, run=done), CTX)
    kept += plan.decisions
    plan = reconcile_model(_obs(plan.status, first, serving=_serving("1")), CTX)
    kept += plan.decisions
    assert plan.status.champion is not None
    return plan.status, kept


def _challenger_two(
    status: ModelStatus, spec: ModelSpec, now: datetime
) -> tuple[ModelPlan, list[Decision]]:
    """A drift request trains version 2, which passes the gate at `now`."""
    kept: list[Decision] = []
    plan = reconcile_model(_obs(status, spec, now, annotations=DRIFT), CTX)
    kept += plan.decisions
    assert plan.status.current_run is not None
    done = TrainingRunResult(
        runId=plan.status.current_run.run_id,
        phase=RunPhase.SUCCEEDED,
        modelVersion="2",
        gatePassed=True,
        metrics={"f1": 0.9},
    )
    plan = reconcile_model(
        _obs(plan.status, spec, now, annotations=DRIFT, run=done, serving=_serving("1")), CTX
    )
    kept += plan.decisions
    return plan, kept


def _approval(version: str, decision: ApprovalDecision, at: datetime) -> ApprovalObserved:
    spec = ModelApprovalSpec(
        model="drill-ae", version=version, decision=decision, reason="checked", approver="alice"
    )
    return ApprovalObserved(f"drill-ae-v{version}-x", spec, at)


def test_a_new_model_records_its_creation_by_the_field_manager_and_its_first_run() -> None:
    managed = [
        {"manager": "kopf", "operation": "Update", "time": "2026-01-01T12:00:05Z",
         "fieldsV1": {"f:metadata": {}}},
        {"manager": "kubectl-client-side-apply", "operation": "Update",
         "time": "2026-01-01T12:00:00Z", "fieldsV1": {"f:spec": {}}},
        {"manager": "loopline-operator", "operation": "Update", "subresource": "status",
         "time": "2026-01-01T12:00:09Z", "fieldsV1": {"f:status": {}}},
    ]  # fmt: skip
    actor = spec_actor(managed)
    plan = reconcile_model(_obs(ModelStatus(), _spec(), spec_actor=actor), CTX)
    assert _kinds(plan) == [DecisionKind.SPEC_CHANGED, DecisionKind.RUN_STARTED]
    created = plan.decisions[0]
    assert created.actor.kind == ActorKind.USER
    assert created.actor.name == "kubectl-client-side-apply"
    assert "operation Update" in created.actor.detail
    assert (created.outcome, created.generation) == ("created", 1)
    assert plan.decisions[1].evidence["trigger"] == "spec-change"
    # The same generation again: no second entry.
    again = reconcile_model(_obs(plan.status, _spec()), CTX)
    assert DecisionKind.SPEC_CHANGED not in _kinds(again)


def test_drift_run_gate_and_canary_are_recorded_with_their_evidence() -> None:
    status, _ = _champion_one(_spec())
    plan, kept = _challenger_two(status, _spec(), T0 + timedelta(hours=1))
    kinds = [d.kind for d in kept]
    assert kinds == [
        DecisionKind.RETRAIN_REQUESTED,
        DecisionKind.RUN_STARTED,
        DecisionKind.RUN_FINISHED,
        DecisionKind.GATE_DECIDED,
        DecisionKind.CANARY_STEP,
    ]
    request = kept[0]
    assert request.actor.kind == ActorKind.MONITOR
    assert request.evidence["features"] == ["vibration"]
    assert request.evidence["pValues"] == {"vibration": 0.001}
    gate = kept[3]
    assert gate.outcome == "passed"
    assert gate.evidence["challenger"] == {"f1": 0.9}
    assert gate.evidence["champion"] == {"f1": 0.8}
    assert gate.evidence["championVersion"] == "1"
    assert (kept[4].version, kept[4].weight) == ("2", 20)
    assert plan.status.phase == "Rolling out"


def test_approval_required_holds_the_challenger_until_approved_by_that_user() -> None:
    spec = _spec("Required")
    status, _ = _champion_one(spec)
    t1 = T0 + timedelta(hours=1)
    plan, kept = _challenger_two(status, spec, t1)
    assert kept[-1].kind == DecisionKind.AWAITING_APPROVAL
    assert plan.status.phase == "AwaitingApproval"
    assert plan.status.rollout is None
    assert plan.status.approval is not None
    assert plan.status.approval.version == "2"
    assert plan.status.approval.champion_metrics == {"f1": 0.8}
    assert "AwaitingApproval" in [e.reason for e in plan.events]
    # An approval of another version is ignored; time passing without a timeout changes nothing.
    stale = (_approval("1", ApprovalDecision.APPROVED, t1),)
    later = t1 + timedelta(days=3)
    waiting = reconcile_model(
        _obs(plan.status, spec, later, approvals=stale, serving=_serving("1")), CTX
    )
    assert waiting.status.phase == "AwaitingApproval"
    assert waiting.decisions == []
    approvals = (_approval("2", ApprovalDecision.APPROVED, later),)
    approved = reconcile_model(
        _obs(waiting.status, spec, later, approvals=approvals, serving=_serving("1")), CTX
    )
    assert _kinds(approved) == [DecisionKind.APPROVED, DecisionKind.CANARY_STEP]
    assert approved.decisions[0].actor.name == "alice"
    assert approved.decisions[0].message == "checked"
    assert approved.status.approval is None
    assert approved.status.rollout is not None
    assert approved.status.rollout.version == "2"
    assert approved.status.phase == "Rolling out"


def test_a_rejection_keeps_the_champion_and_marks_the_run() -> None:
    spec = _spec("Required")
    status, _ = _champion_one(spec)
    t1 = T0 + timedelta(hours=1)
    plan, _ = _challenger_two(status, spec, t1)
    approvals = (_approval("2", ApprovalDecision.REJECTED, t1),)
    rejected = reconcile_model(
        _obs(plan.status, spec, t1, approvals=approvals, serving=_serving("1")), CTX
    )
    assert _kinds(rejected) == [DecisionKind.REJECTED]
    assert rejected.status.champion is not None
    assert rejected.status.champion.version == "1"
    assert rejected.status.challenger is None
    assert rejected.status.rollout is None
    assert rejected.status.phase == "Serving"
    result = rejected.status.runs[0].rollout_result
    assert result is not None
    assert result.outcome == RolloutOutcome.REJECTED
    assert rejected.serving is not None
    assert rejected.serving.canary_version is None


def test_timeout_rejects_or_is_recorded_once_and_keeps_waiting() -> None:
    t1 = T0 + timedelta(hours=1)
    late = t1 + timedelta(seconds=601)
    for action, phase, kind in (
        ("Reject", "Serving", DecisionKind.REJECTED),
        ("Wait", "AwaitingApproval", DecisionKind.APPROVAL_TIMED_OUT),
    ):
        spec = _spec("Required", approvalTimeoutSeconds=600, onTimeout=action)
        status, _ = _champion_one(spec)
        plan, _ = _challenger_two(status, spec, t1)
        early = reconcile_model(_obs(plan.status, spec, t1 + timedelta(seconds=599)), CTX)
        assert early.decisions == []
        timed = reconcile_model(_obs(plan.status, spec, late, serving=_serving("1")), CTX)
        assert _kinds(timed) == [kind], action
        assert timed.status.phase == phase
        again = reconcile_model(_obs(timed.status, spec, late, serving=_serving("1")), CTX)
        assert again.decisions == []


def test_a_newer_challenger_expires_the_one_waiting() -> None:
    spec = _spec("Required")
    status, _ = _champion_one(spec)
    t1 = T0 + timedelta(hours=1)
    plan, _ = _challenger_two(status, spec, t1)
    notes = {RETRAIN_ANNOTATION: "manual-2", RETRAIN_REASON_ANNOTATION: "{}"}
    plan = reconcile_model(_obs(plan.status, spec, t1, annotations=notes), CTX)
    assert plan.status.current_run is not None
    done = TrainingRunResult(
        runId=plan.status.current_run.run_id,
        phase=RunPhase.SUCCEEDED,
        modelVersion="3",
        gatePassed=True,
        metrics={"f1": 0.95},
    )
    plan = reconcile_model(_obs(plan.status, spec, t1, annotations=notes, run=done), CTX)
    assert DecisionKind.APPROVAL_EXPIRED in _kinds(plan)
    assert plan.status.approval is not None
    assert plan.status.approval.version == "3"
    # The approval of version 2 came too late: it is ignored.
    approvals = (_approval("2", ApprovalDecision.APPROVED, t1),)
    still = reconcile_model(_obs(plan.status, spec, t1, approvals=approvals), CTX)
    assert still.status.phase == "AwaitingApproval"


def _d(minute: int, kind: DecisionKind, version: str, weight: int | None = None) -> Decision:
    return Decision.model_validate(
        {
            "at": T0 + timedelta(minutes=minute),
            "kind": kind,
            "actor": {"kind": "operator"},
            "version": version,
            "weight": weight,
        }
    )


LEDGER = [
    _d(0, DecisionKind.GATE_DECIDED, "1"),
    _d(1, DecisionKind.CANARY_STEP, "1", 100),
    _d(1, DecisionKind.PROMOTED, "1", 100),
    _d(10, DecisionKind.GATE_DECIDED, "2"),
    _d(11, DecisionKind.APPROVED, "2"),
    _d(12, DecisionKind.CANARY_STEP, "2", 20),
    _d(15, DecisionKind.CANARY_STEP, "2", 50),
    _d(18, DecisionKind.PROMOTED, "2", 100),
    _d(30, DecisionKind.CANARY_STEP, "3", 20),
    _d(31, DecisionKind.ROLLED_BACK, "3", 0),
    _d(40, DecisionKind.DELETED, "2"),
]


def test_serving_at_replays_promotions_canaries_and_rollbacks() -> None:
    before = serving_at(LEDGER, T0 - timedelta(minutes=1))
    assert before.champion is None
    first = serving_at(LEDGER, T0 + timedelta(minutes=5))
    assert (first.champion, first.canary) == ("1", None)
    during = serving_at(LEDGER, T0 + timedelta(minutes=16))
    assert (during.champion, during.canary, during.canary_weight) == ("1", "2", 50)
    after = serving_at(LEDGER, T0 + timedelta(minutes=20))
    assert (after.champion, after.canary) == ("2", None)
    assert [d.kind for d in after.because] == [DecisionKind.GATE_DECIDED, DecisionKind.APPROVED]
    rolled = serving_at(LEDGER, T0 + timedelta(minutes=35))
    assert (rolled.champion, rolled.canary) == ("2", None)
    assert rolled.last_ended is not None
    assert rolled.last_ended.version == "3"
    gone = serving_at(LEDGER, T0 + timedelta(minutes=41))
    assert gone.champion is None
    assert gone.deleted is not None
    assert gone.to_json()["deleted"]["kind"] == "Deleted"


def test_select_filters_by_time_and_version() -> None:
    assert [d.version for d in select(LEDGER, version="3")] == ["3", "3"]
    since = select(LEDGER, since=T0 + timedelta(minutes=30))
    assert [d.kind for d in since] == [
        DecisionKind.CANARY_STEP,
        DecisionKind.ROLLED_BACK,
        DecisionKind.DELETED,
    ]


def test_approval_no_longer_required_starts_the_canary() -> None:
    spec = _spec("Required")
    status, _ = _champion_one(spec)
    plan, _ = _challenger_two(status, spec, T0)
    relaxed = reconcile_model(_obs(plan.status, replace_spec(spec)), CTX)
    assert relaxed.status.rollout is not None
    assert DecisionKind.APPROVED in _kinds(relaxed)


def replace_spec(spec: ModelSpec) -> ModelSpec:
    return ModelSpec.model_validate(
        {**spec.model_dump(by_alias=True, mode="json"), "promotion": {"approval": "None"}}
    )
