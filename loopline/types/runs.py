"""A training run as the operators ask for it and as the pipeline reports it back.

The operator builds a `TrainingRunSpec` (pure), a pipeline backend executes it (locally with
kfp.local, or on KFP), and a `TrainingRunResult` comes back. Both are JSON files on disk for the
local backend, so a restarted operator can adopt a run in flight.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from loopline.types.alarms import AlarmPolicy
from loopline.types.common import DRIFT_MIN_ROWS, Spec, Task, Trigger
from loopline.types.policy import TrainingParams, ValidationPolicy, policy_problem


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"  # trained, gated, registered; `gate_passed`: the gate's verdict
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class PipelineStep(StrEnum):
    """The training pipeline's steps, in order: the names the steps report in their progress
    events and the operator reads back (`status.currentRun.step`)."""

    LOAD_FEATURES = "load-features"
    VALIDATE_DATA = "validate-data"
    TRAIN_MODEL = "train-model"
    EVALUATE_MODEL = "evaluate-model"
    COMPARE_WITH_CHAMPION = "compare-with-champion"
    REGISTER_MODEL = "register-model"


# The steps after training: while one runs, the Model is Validating the new version.
GATE_STEPS = frozenset(
    {PipelineStep.EVALUATE_MODEL, PipelineStep.COMPARE_WITH_CHAMPION, PipelineStep.REGISTER_MODEL}
)


class TrainingRunSpec(Spec):
    run_id: str = Field(alias="runId", description="Derived from uid, generation and trigger.")
    namespace: str
    model_name: str = Field(alias="modelName")
    task: Task
    trigger: Trigger
    feature_service: str = Field(alias="featureService")
    fallback_feature_service: str = Field(default="core_sensors", alias="fallbackFeatureService")
    entity_key: str | None = Field(
        default=None,
        alias="entityKey",
        description="The entity column the Model expects; None takes the registered data "
        "set's. A value that is not the data set's entity fails the run at load-features.",
    )
    window_start: datetime | None = Field(default=None, alias="windowStart")
    window_end: datetime | None = Field(default=None, alias="windowEnd")
    drift_start: datetime | None = Field(
        default=None,
        alias="driftStart",
        description="When the drift that triggered this run began (from the monitor): the run "
        "trains on the data since then when there are at least driftMinRows rows of it.",
    )
    drift_min_rows: int = Field(
        default=DRIFT_MIN_ROWS,
        alias="driftMinRows",
        ge=0,
        description="Rows since driftStart needed to train on them alone (Model "
        "spec.monitoring.driftWindowMinRows); 0 means always the whole training window.",
    )
    params: TrainingParams = Field(default_factory=TrainingParams)
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    alarms: AlarmPolicy = Field(
        default_factory=AlarmPolicy,
        description="The Model's spec.alarms: the false-alarm budget the thresholds are "
        "calibrated for, and the debouncing the evaluation counts alarm events with.",
    )
    registered_model_name: str = Field(alias="registeredModelName")
    parent_version: str | None = Field(default=None, alias="parentVersion")
    move_champion: bool = Field(
        default=True,
        alias="moveChampion",
        description="Point the registry's champion alias at a version that passes the gate. "
        "The Model operator sets false: it rolls the version out and moves the alias itself "
        "once the version serves all traffic, so `champion` never names a canary that may "
        "still be rolled back.",
    )
    mlflow_tracking_uri: str = Field(alias="mlflowTrackingUri")
    feature_repo: str = Field(alias="featureRepo", description="Path or URI of the Feast repo.")
    pipeline: str = Field(default="training", description="Pipeline name in loopline.pipelines.")

    @model_validator(mode="after")
    def _policy_fits_task(self) -> TrainingRunSpec:
        problem = policy_problem(self.task, self.validation)
        if problem:
            raise ValueError(problem)
        return self


def legacy_gate_field(data: Any) -> Any:
    """Statuses written by earlier releases call the gate's verdict `promoted`; read it as
    `gatePassed` so an upgraded operator can parse every stored Model and Pipeline."""
    if isinstance(data, dict) and "promoted" in data:
        data = dict(data)
        value = data.pop("promoted")
        data.setdefault("gatePassed", value)
    return data


class TrainingRunResult(Spec):
    run_id: str = Field(alias="runId")
    phase: RunPhase
    message: str = ""
    step: str | None = Field(default=None, description="The pipeline step running or failed.")
    mlflow_run_id: str | None = Field(default=None, alias="mlflowRunId")
    model_version: str | None = Field(default=None, alias="modelVersion")
    gate_passed: bool = Field(default=False, alias="gatePassed")
    rejection_reason: str | None = Field(default=None, alias="rejectionReason")
    metrics: dict[str, float] = Field(default_factory=dict)
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")

    _legacy = model_validator(mode="before")(legacy_gate_field)
