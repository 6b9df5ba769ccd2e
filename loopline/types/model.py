"""The Model resource: what one deployed model should be.

A user writes the spec (`kubectl apply`); the operator owns the status. The same pydantic
types generate the CRD's OpenAPI schema (`loopline.types.crd_schema`), so what the API server
accepts and what the operator parses cannot drift apart. Rules that relate two fields are CEL
`x-kubernetes-validations` attached to the type that holds both, and mirrored by a pydantic
validator so the same object is rejected in both places with the same message.
"""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from loopline.types.common import DRIFT_MIN_ROWS, Spec, Task
from loopline.types.pipeline import NAME_PATTERN
from loopline.types.policy import TrainingParams, ValidationPolicy


class Protocol(StrEnum):
    REST = "rest"
    GRPC = "grpc"


class Detector(StrEnum):
    KS = "ks"
    MMD = "mmd"


class AbortMetric(StrEnum):
    """What a canary is judged by while it takes a share of the traffic."""

    ERROR_RATE = "error_rate"
    LATENCY_P95_SECONDS = "latency_p95_seconds"
    FALLBACK_RATE = "fallback_rate"
    ANOMALY_RATE_DELTA = "anomaly_rate_delta"


class PipelineRef(Spec):
    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="A Pipeline's name."
    )


CANARY_RULES: list[JsonDict] = [
    {
        "rule": "self.steps.isSorted()",
        "message": "serving.canary.steps must be strictly increasing",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.steps[size(self.steps) - 1] == 100",
        "message": "serving.canary.steps must end at 100",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
]


class CanarySpec(Spec):
    """Traffic percentages a new champion walks through, and what aborts the walk."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": list(CANARY_RULES)})

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Canary traffic percentages, strictly increasing, ending at 100.",
    )
    step_seconds: int = Field(
        default=60, alias="stepSeconds", ge=0, le=86400, description="How long each step holds."
    )
    abort_metric: AbortMetric = Field(default=AbortMetric.ERROR_RATE, alias="abortMetric")
    abort_threshold: float = Field(
        default=0.05,
        alias="abortThreshold",
        ge=0,
        description="The canary is aborted when abortMetric exceeds this value.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("serving.canary.steps must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("serving.canary.steps must end at 100")
        return steps


class ServingSpec(Spec):
    replicas: int = Field(default=1, ge=0, le=20)
    protocol: Protocol = Field(
        default=Protocol.REST, description="The endpoint printed in status (both are served)."
    )
    canary: CanarySpec = Field(default_factory=CanarySpec)
    fallback_on_missing_sensors: bool = Field(
        default=True,
        alias="fallbackOnMissingSensors",
        description="Rows with missing non-core sensors go to the core-sensor fallback model.",
    )


MONITORING_RULES: list[JsonDict] = [
    {
        "rule": "!self.retrainOnDrift || self.enabled",
        "message": "monitoring.retrainOnDrift needs monitoring.enabled: true",
        "fieldPath": ".retrainOnDrift",
        "reason": "FieldValueInvalid",
    }
]


class MonitoringSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": list(MONITORING_RULES)}
    )

    enabled: bool = True
    detector: Detector = Detector.KS
    p_value: float = Field(default=0.05, alias="pValue", gt=0, lt=1)
    window_size: int = Field(default=500, alias="windowSize", ge=10, le=1_000_000)
    cooldown_seconds: int = Field(default=600, alias="cooldownSeconds", ge=0, le=604800)
    retrain_on_drift: bool = Field(
        default=False,
        alias="retrainOnDrift",
        description="Drift detected by the monitor requests a retraining run.",
    )
    drift_window_min_rows: int = Field(
        default=DRIFT_MIN_ROWS,
        alias="driftWindowMinRows",
        ge=0,
        le=100_000_000,
        description="A drift-triggered run trains on the rows since the drift began (the "
        "monitor reports when) if there are at least this many, so the new model learns the new "
        "operating point; with fewer, or 0 here, it trains on the whole training window.",
    )

    @model_validator(mode="after")
    def _retrain_needs_monitor(self) -> MonitoringSpec:
        if self.retrain_on_drift and not self.enabled:
            raise ValueError(str(MONITORING_RULES[0]["message"]))
        return self


class ModelSpec(Spec):
    task: Task
    pipeline_ref: PipelineRef = Field(alias="pipelineRef")
    feature_service: str | None = Field(
        default=None,
        alias="featureService",
        max_length=253,
        pattern=NAME_PATTERN,
        description="Feast feature service; empty means the Pipeline's.",
    )
    fallback_feature_service: str = Field(
        default="core_sensors", alias="fallbackFeatureService", pattern=NAME_PATTERN
    )
    entity_key: str = Field(default="machine_id", alias="entityKey", pattern=NAME_PATTERN)
    training: TrainingParams | None = Field(
        default=None,
        description="Overrides of the Pipeline's parameters: only the fields set here apply.",
    )
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
