"""Status blocks of the Model and Pipeline resources, written only by the operator.

The shapes follow Kubernetes conventions: `conditions` in the metav1.Condition shape (with
`observedGeneration`, so a reader can tell whether a condition describes the current spec), a
one-word `phase` for printer columns, and every timestamp in RFC 3339 UTC.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from loopline.types.approval import ApprovalStatus
from loopline.types.batch import BatchStatus
from loopline.types.common import Spec, Trigger
from loopline.types.runs import RunPhase, legacy_gate_field


class ModelPhase(StrEnum):
    PENDING = "Pending"
    TRAINING = "Training"
    VALIDATING = "Validating"
    ROLLING_OUT = "Rolling out"
    AWAITING_APPROVAL = "AwaitingApproval"
    SERVING = "Serving"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    TRAINING = "Training"
    SERVING = "Serving"
    DRIFTED = "Drifted"
    DEGRADED = "Degraded"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Spec):
    """metav1.Condition."""

    type: str = Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9_.\-/]*$")
    status: ConditionStatus
    observed_generation: int = Field(default=0, alias="observedGeneration", ge=0)
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime = Field(alias="lastTransitionTime")


class RolloutOutcome(StrEnum):
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"  # a newer version replaced the canary before it finished
    REJECTED = "Rejected"  # a person rejected it, or nobody approved it in time


class RolloutResult(Spec):
    """How the rollout of a run's version ended. The gate's `gatePassed` says only that the
    version went on to a canary; this says whether it ever served all traffic, and why not,
    long after the CanaryAborted Event has expired."""

    outcome: RolloutOutcome
    weight: int = Field(ge=0, le=100, description="Canary weight when the rollout ended.")
    message: str = ""
    finished_at: datetime = Field(alias="finishedAt")


class RunRecord(Spec):
    """One training run as the Model and Pipeline statuses list it."""

    run_id: str = Field(alias="runId")
    trigger: Trigger
    generation: int = Field(ge=0)
    request_id: str | None = Field(default=None, alias="requestId")
    phase: RunPhase
    step: str | None = None
    message: str = ""
    model: str | None = Field(default=None, description="Model name (in Pipeline status).")
    mlflow_run_id: str | None = Field(default=None, alias="mlflowRunId")
    model_version: str | None = Field(default=None, alias="modelVersion")
    gate_passed: bool | None = Field(
        default=None,
        alias="gatePassed",
        description="The champion gate's verdict: whether the version went on to a canary "
        "(whether it became champion is rolloutResult.outcome).",
    )
    rollout_result: RolloutResult | None = Field(default=None, alias="rolloutResult")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")

    _legacy = model_validator(mode="before")(legacy_gate_field)


class VersionRef(Spec):
    version: str
    run_id: str | None = Field(default=None, alias="runId")
    metrics: dict[str, float] = Field(default_factory=dict)


class Endpoints(Spec):
    rest: str | None = None
    grpc: str | None = None
    primary: str | None = Field(
        default=None,
        description="The endpoint of spec.serving.protocol (both protocols are served).",
    )
    monitor: str | None = Field(default=None, description="The Model's drift monitor.")


class RolloutStatus(Spec):
    """Progress of a canary: which version, at which step (index into spec canary steps)."""

    version: str
    step_index: int = Field(alias="stepIndex", ge=0)
    weight: int = Field(ge=0, le=100)
    step_started_at: datetime = Field(alias="stepStartedAt")


class DriftStatus(Spec):
    drifted: bool = False
    last_check: datetime | None = Field(default=None, alias="lastCheck")
    features: list[str] = Field(default_factory=list)
    p_values: dict[str, float] = Field(default_factory=dict, alias="pValues")


class RetrainingStatus(Spec):
    """The last retraining request and what the operator did with it."""

    request_id: str = Field(alias="requestId")
    trigger: Trigger
    reason: str = Field(default="", description="The request's reason annotation, verbatim.")
    received_at: datetime = Field(alias="receivedAt")
    run_id: str | None = Field(default=None, alias="runId")


# Kept in the status because Events expire within the hour, and these are what an engineer
# looks for after an incident.
class HistoryEntry(Spec):
    """A repair the operator made that no run or rollout explains (an alias put back)."""

    at: datetime
    reason: str = Field(max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    message: str = ""
    found: str | None = Field(
        default=None, description="What the operator found (e.g. the version an alias named)."
    )
    restored: str | None = Field(
        default=None, description="What the operator put back (e.g. the champion version)."
    )


class ModelStatus(Spec):
    phase: ModelPhase = ModelPhase.PENDING
    message: str = ""
    observed_generation: int = Field(default=0, alias="observedGeneration", ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    current_run: RunRecord | None = Field(default=None, alias="currentRun")
    runs: list[RunRecord] = Field(default_factory=list, description="Recent runs, newest first.")
    champion: VersionRef | None = None
    challenger: VersionRef | None = None
    rollout: RolloutStatus | None = None
    endpoints: Endpoints | None = None
    drift: DriftStatus | None = None
    retraining: RetrainingStatus | None = None
    training_hash: str | None = Field(
        default=None,
        alias="trainingHash",
        description="Hash of the training inputs of the last run started; a spec or Pipeline "
        "change that alters them starts a new run.",
    )
    pending_request: RetrainingStatus | None = Field(
        default=None,
        alias="pendingRequest",
        description="A request received while a run was in flight (concurrency Forbid).",
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description="Repairs the operator made outside runs and rollouts, newest first.",
    )
    approval: ApprovalStatus | None = Field(
        default=None,
        description="The current or last request for a person's approval "
        "(spec.promotion.approval: Required).",
    )
    batch: BatchStatus | None = Field(
        default=None, description="The scheduled batch scoring runs (spec.batch)."
    )


class PipelineStatus(Spec):
    observed_generation: int = Field(default=0, alias="observedGeneration", ge=0)
    models: list[str] = Field(default_factory=list, description="Models using this Pipeline.")
    recent_runs: list[RunRecord] = Field(default_factory=list, alias="recentRuns")
    last_success: datetime | None = Field(default=None, alias="lastSuccess")
    last_schedule_time: datetime | None = Field(default=None, alias="lastScheduleTime")
    next_schedule_time: datetime | None = Field(default=None, alias="nextScheduleTime")
    conditions: list[Condition] = Field(default_factory=list)
