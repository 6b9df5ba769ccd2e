"""What the Model reconciler works with and hands back: the observation, the plan (status,
run to submit or cancel, serving wanted, Events, the champion alias, rollout marks), and the
small pure helpers the plan is made of (retraining requests, run results, rollout endings,
Degraded and Failed marks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loopline.operators.builders.conditions import set_condition
from loopline.operators.builders.monitoring import DriftCheck
from loopline.operators.builders.serving import ServingDesired, ServingObserved
from loopline.types.approval import ApprovalStatus, ModelApprovalSpec
from loopline.types.common import (
    RETRAIN_ANNOTATION,
    RETRAIN_REASON_ANNOTATION,
    Trigger,
)
from loopline.types.model import ModelSpec
from loopline.types.monitor import RetrainReason
from loopline.types.pipeline import PipelineSpec
from loopline.types.runs import GATE_STEPS, RunPhase, TrainingRunResult, TrainingRunSpec
from loopline.types.status import (
    ConditionType,
    DriftStatus,
    ModelPhase,
    ModelStatus,
    RetrainingStatus,
    RolloutOutcome,
    RolloutResult,
    RolloutStatus,
    RunRecord,
    VersionRef,
)

TERMINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})
# Steps after training (the pipeline's own, and short forms for other pipelines): while one
# runs, the Model is Validating the new version rather than Training it.
VALIDATING_STEPS = frozenset({*GATE_STEPS, "evaluate", "compare", "register"})
RUN_HISTORY = 10


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ApprovalRecord:
    """A ModelApproval as the operator read it."""

    name: str
    spec: ModelApprovalSpec
    created_at: datetime
    applied: bool = False
    message: str = ""


@dataclass(frozen=True)
class ApprovalMark:
    """What the operator writes on a ModelApproval's status: taken into account or not, why."""

    name: str
    applied: bool
    message: str


@dataclass(frozen=True)
class ModelObservation:
    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: ModelSpec
    status: ModelStatus
    pipeline: PipelineSpec | None
    pipeline_message: str  # why `pipeline` is None
    run: TrainingRunResult | None  # the backend's view of status.currentRun
    serving: ServingObserved | None
    now: datetime
    drift_check: DriftCheck | None = None  # what the drift monitor last reported
    # The ModelApprovals of the Model's namespace, read while a challenger awaits approval.
    approvals: tuple[ApprovalRecord, ...] = ()


@dataclass(frozen=True)
class ChampionAlias:
    """Where the registry's `champion` alias should point: the version serving all traffic.

    The operator owns the alias of the Models it rolls out (their runs leave it alone,
    `TrainingRunSpec.move_champion`), so the monitor's reference and the next gate's
    comparison follow what serves, and a canary rolled back never becomes champion."""

    registered_model: str
    version: str


@dataclass(frozen=True)
class RolloutMark:
    """How a version's rollout ended, for its registry tags (`loopline.rollout.*`): without
    it a version rolled back after passing the gate reads `gate.decision: passed` in MLflow
    and nothing says it never served."""

    registered_model: str
    version: str
    outcome: RolloutOutcome
    message: str


@dataclass
class ModelPlan:
    status: ModelStatus
    submit: TrainingRunSpec | None = None
    cancel: str | None = None
    serving: ServingDesired | None = None
    events: list[Event] = field(default_factory=list)
    champion_alias: ChampionAlias | None = None
    rollout_marks: list[RolloutMark] = field(default_factory=list)
    approval_marks: list[ApprovalMark] = field(default_factory=list)


def parse_retrain_request(annotations: Mapping[str, str], now: datetime) -> RetrainingStatus | None:
    """The retraining request annotated on the Model, or None when there is none."""
    request_id = annotations.get(RETRAIN_ANNOTATION, "").strip()
    if not request_id:
        return None
    raw = annotations.get(RETRAIN_REASON_ANNOTATION, "")
    # An unreadable reason is kept verbatim; the request still counts (manual).
    reason = RetrainReason.parse(raw)
    trigger = reason.trigger if reason is not None else Trigger.MANUAL
    return RetrainingStatus(request_id=request_id, trigger=trigger, reason=raw, received_at=now)


def drift_start_of(request: RetrainingStatus | None) -> datetime | None:
    """When the drift behind a drift request began (its reason's `driftStart`), if it says.

    A reason without it (an older monitor, a hand-written request) or with an unreadable one
    gives None: the run then trains on the whole training window, as before."""
    if request is None or request.trigger != Trigger.DRIFT or not request.reason:
        return None
    reason = RetrainReason.parse(request.reason)
    if reason is None or not reason.drift_start:
        return None
    try:
        start = datetime.fromisoformat(reason.drift_start)
    except ValueError:
        return None
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)


def drift_from_reason(raw: str, now: datetime) -> DriftStatus:
    reason = RetrainReason.parse(raw) or RetrainReason()
    try:
        last_check = datetime.fromisoformat(reason.window_end) if reason.window_end else now
    except ValueError:
        last_check = now
    return DriftStatus(
        drifted=True, last_check=last_check, features=reason.features, p_values=reason.p_values
    )


def fold_result(record: RunRecord, result: TrainingRunResult) -> RunRecord:
    return record.model_copy(
        update={
            "phase": result.phase,
            "step": result.step,
            "message": result.message or result.rejection_reason or "",
            "mlflow_run_id": result.mlflow_run_id,
            "model_version": result.model_version,
            "gate_passed": result.gate_passed if result.phase == RunPhase.SUCCEEDED else None,
            "started_at": result.started_at or record.started_at,
            "finished_at": result.finished_at,
        }
    )


def end_rollout(
    runs: list[RunRecord],
    rollout: RolloutStatus,
    outcome: RolloutOutcome,
    message: str,
    now: datetime,
) -> list[RunRecord]:
    """`runs` with the result recorded on the newest run that registered the version (none
    when that run has left the history)."""
    return end_version(runs, rollout.version, outcome, message, now, rollout.weight)


def end_version(
    runs: list[RunRecord],
    version: str,
    outcome: RolloutOutcome,
    message: str,
    now: datetime,
    weight: int = 0,
) -> list[RunRecord]:
    """`runs` with how the version's rollout ended (or why it never began) recorded on the
    newest run that registered it; unchanged when that run has left the history."""
    result = RolloutResult(outcome=outcome, weight=weight, message=message, finished_at=now)
    for i, run in enumerate(runs):
        if run.model_version == version:
            return [*runs[:i], run.model_copy(update={"rollout_result": result}), *runs[i + 1 :]]
    return runs


def rollout_marks(registered_model: str, runs: list[RunRecord]) -> list[RolloutMark]:
    return [
        RolloutMark(
            registered_model,
            run.model_version,
            run.rollout_result.outcome,
            run.rollout_result.message,
        )
        for run in runs
        if run.model_version and run.rollout_result is not None
    ]


def mark_degraded(
    status: ModelStatus, generation: int, reason: str, message: str, now: datetime
) -> ModelStatus:
    """The status with Degraded=True and the reason: a backend is failing temporarily."""
    conditions = set_condition(
        list(status.conditions), ConditionType.DEGRADED, True, reason, message, generation, now
    )
    conditions = set_condition(
        conditions, ConditionType.READY, False, reason, message, generation, now
    )
    return status.model_copy(
        update={
            "phase": ModelPhase.DEGRADED,
            "message": message,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )


def mark_failed(
    status: ModelStatus, generation: int, reason: str, message: str, now: datetime
) -> ModelStatus:
    """The status with phase Failed: the spec cannot work as written; the message says why."""
    conditions = set_condition(
        list(status.conditions), ConditionType.READY, False, reason, message, generation, now
    )
    return status.model_copy(
        update={
            "phase": ModelPhase.FAILED,
            "message": message,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )


@dataclass
class Work:
    """The Model's status as the reconcile phases change it, plus what they decide to do.

    Each phase reads the observation and this working state and updates it; `reconcile_model`
    runs them in order and builds the plan from the result."""

    current: RunRecord | None
    runs: list[RunRecord]
    champion: VersionRef | None
    challenger: VersionRef | None
    rollout: RolloutStatus | None
    drift: DriftStatus | None
    retraining: RetrainingStatus | None
    pending: RetrainingStatus | None
    thash: str | None
    approval: ApprovalStatus | None = None
    events: list[Event] = field(default_factory=list)
    submit: TrainingRunSpec | None = None
    cancel: str | None = None

    @classmethod
    def of(cls, st: ModelStatus) -> Work:
        return cls(
            current=st.current_run,
            runs=list(st.runs),
            champion=st.champion,
            challenger=st.challenger,
            rollout=st.rollout,
            drift=st.drift,
            retraining=st.retraining,
            pending=st.pending_request,
            thash=st.training_hash,
            approval=st.approval,
        )

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))


def reject_run(status: ModelStatus, generation: int, message: str, now: datetime) -> ModelStatus:
    """The backend refused the run for good: record it as failed, so the Model shows Failed
    (or keeps serving its champion) instead of asking again on every reconcile."""
    current = status.current_run
    runs = list(status.runs)
    if current is not None:
        failed: RunRecord = current.model_copy(
            update={"phase": RunPhase.FAILED, "message": message, "finished_at": now}
        )
        runs = [failed, *runs][:10]
    status = status.model_copy(update={"current_run": None, "runs": runs})
    if status.champion is None:
        return mark_failed(status, generation, "BackendRejected", message, now)
    return status
