"""The Model resource: what one deployed model should be.

A user writes the spec (`kubectl apply`); the operator owns the status. The same pydantic
types generate the CRD's OpenAPI schema (`loopline.types.crd_schema`), so what the API server
accepts and what the operator parses cannot drift apart. Rules that relate two fields are CEL
`x-kubernetes-validations` attached to the type that holds both, and mirrored by a pydantic
validator so the same object is rejected in both places with the same message.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from loopline.types.alarms import DESCRIPTION as ALARMS_DESCRIPTION
from loopline.types.alarms import AlarmPolicy
from loopline.types.approval import PromotionSpec
from loopline.types.batch import BATCH_DESCRIPTION, BatchSpec
from loopline.types.common import DRIFT_MIN_ROWS, Spec, Task
from loopline.types.pipeline import NAME_PATTERN
from loopline.types.policy import (
    ANOMALY_COMPARABLE,
    ANOMALY_MINIMUM_METRICS,
    CLASSIFICATION_MINIMUM_METRICS,
    METRIC_MESSAGE,
    MINIMUMS_TASK_MESSAGE,
    TrainingParams,
    ValidationPolicy,
    cel_list,
    policy_problem,
)

# An entity key is a column of the user's data and a Feast join key.
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_LATENCY_THRESHOLD_SECONDS = 3600.0


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


RATE_THRESHOLD_MESSAGE = (
    "serving.canary.abortThreshold must be at most 1 for a rate (error_rate, fallback_rate, "
    "anomaly_rate_delta are fractions 0..1)"
)
LATENCY_THRESHOLD_MESSAGE = (
    "serving.canary.abortThreshold for latency_p95_seconds must be above 0 and at most "
    f"{MAX_LATENCY_THRESHOLD_SECONDS:g} seconds"
)
CANARY_RULES: list[JsonDict] = [
    {
        "rule": "self.steps.isSorted()",
        "message": "serving.canary.steps must be strictly increasing",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
    {
        # An empty list is reported by minItems; indexing it here would leak a CEL error.
        "rule": "size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100",
        "message": "serving.canary.steps must end at 100",
        "fieldPath": ".steps",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.abortMetric == 'latency_p95_seconds' || self.abortThreshold <= 1.0",
        "message": RATE_THRESHOLD_MESSAGE,
        "fieldPath": ".abortThreshold",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.abortMetric != 'latency_p95_seconds' || self.abortThreshold > 0.0",
        "message": LATENCY_THRESHOLD_MESSAGE,
        "fieldPath": ".abortThreshold",
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
        le=MAX_LATENCY_THRESHOLD_SECONDS,
        description="The canary is aborted when abortMetric exceeds this value (a fraction "
        "0..1 for the rates, seconds for latency_p95_seconds).",
    )

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("serving.canary.steps must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("serving.canary.steps must end at 100")
        return steps

    @model_validator(mode="after")
    def _threshold_fits_metric(self) -> CanarySpec:
        if self.abort_metric == AbortMetric.LATENCY_P95_SECONDS:
            if self.abort_threshold <= 0:
                raise ValueError(LATENCY_THRESHOLD_MESSAGE)
        elif self.abort_threshold > 1:
            raise ValueError(RATE_THRESHOLD_MESSAGE)
        return self


# A Kubernetes quantity (apimachinery's grammar without a sign: a resource amount is never
# negative): digits with an optional fraction, then a binary (Ki..Ei) or decimal (m, k..E)
# suffix or a decimal exponent. Memory has no `m`: `128m` would be 0.128 bytes.
CPU_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
MEMORY_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][+-]?[0-9]{1,2})?$"
_QUANTITY = re.compile(CPU_PATTERN)
_SUFFIXES = {
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    "m": Decimal("0.001"),
    "": Decimal(1),
}


def quantity_value(text: str) -> Decimal:
    """The amount a Kubernetes quantity (`500m`, `2Gi`, `1e3`) stands for."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def _not_above(resource: str) -> JsonDict:
    """A rule of ServingResources: the request of `resource` is at most its limit (the API
    server refuses such a pod anyway, but only when the operator creates it)."""
    return {
        "rule": f"!has(self.requests) || !has(self.limits) || !has(self.requests.{resource}) "
        f"|| !has(self.limits.{resource}) || "
        f"quantity(self.requests.{resource}).compareTo(quantity(self.limits.{resource})) <= 0",
        "message": f"serving.resources.requests.{resource} must not exceed "
        f"serving.resources.limits.{resource}",
        "fieldPath": f".requests.{resource}",
        "reason": "FieldValueInvalid",
    }


RESOURCES_RULES: list[JsonDict] = [_not_above("cpu"), _not_above("memory")]


class ResourceAmounts(Spec):
    """CPU and memory as Kubernetes quantities; a field left out is not set on the pods."""

    cpu: str | None = Field(
        default=None,
        max_length=32,
        pattern=CPU_PATTERN,
        description="CPU as a Kubernetes quantity: 500m, 1, 2.5.",
    )
    memory: str | None = Field(
        default=None,
        max_length=32,
        pattern=MEMORY_PATTERN,
        description="Memory as a Kubernetes quantity: 512Mi, 2Gi (bytes; no m suffix).",
    )


class ServingResources(Spec):
    """Requests and limits of each model server pod (serving backends that run pods)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": list(RESOURCES_RULES)})

    requests: ResourceAmounts | None = Field(
        default=None, description="What the scheduler reserves for each model server pod."
    )
    limits: ResourceAmounts | None = Field(
        default=None, description="The most each model server pod may use."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ServingResources:
        if self.requests is None or self.limits is None:
            return self
        for rule, resource in zip(RESOURCES_RULES, ("cpu", "memory"), strict=True):
            request = getattr(self.requests, resource)
            limit = getattr(self.limits, resource)
            if (
                request is not None
                and limit is not None
                and quantity_value(request) > quantity_value(limit)
            ):
                raise ValueError(str(rule["message"]))
        return self

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        """The container `resources` block: only the amounts that are set."""
        out: dict[str, dict[str, str]] = {}
        for part in ("requests", "limits"):
            amounts = getattr(self, part)
            if amounts is not None:
                values = amounts.model_dump(exclude_none=True)
                if values:
                    out[part] = values
        return out


class ServingSpec(Spec):
    replicas: int = Field(default=1, ge=0, le=20)
    protocol: Protocol = Field(
        default=Protocol.REST,
        description="The endpoint shown as status.endpoints.primary and in kubectl's Endpoint "
        "column; both protocols are served.",
    )
    canary: CanarySpec = Field(default_factory=CanarySpec)
    fallback_on_missing_sensors: bool = Field(
        default=True,
        alias="fallbackOnMissingSensors",
        description="Rows with missing non-core sensors go to the core-sensor fallback model.",
    )
    resources: ServingResources | None = Field(
        default=None,
        description="CPU and memory requests and limits of each model server pod (the "
        "kubernetes serving backend); unset: none, the namespace's defaults apply.",
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


NEW_MODEL = "create a new Model (and delete this one once the new one serves)"
IMMUTABLE_MESSAGES: dict[str, str] = {
    # The registered model's versions, the champion and its metrics are of this task.
    "task": f"task cannot change on a live Model: {NEW_MODEL} for the other task",
    # Runs in flight and status.runs belong to the Pipeline the Model was created with.
    "pipelineRef": "pipelineRef cannot change on a live Model: "
    f"{NEW_MODEL} that references the other Pipeline",
    # The champion and the online store's rows are keyed by this column.
    "entityKey": f"entityKey cannot change on a live Model: {NEW_MODEL} keyed by the other column",
}


def _immutable(field: str) -> JsonDict:
    """A transition rule: the API server refuses an update that changes `field`."""
    return {
        "x-kubernetes-validations": [
            {
                "rule": "self == oldSelf",
                "message": IMMUTABLE_MESSAGES[field],
                "reason": "FieldValueForbidden",
            }
        ]
    }


ANOMALY_RATE_MESSAGE = (
    "serving.canary.abortMetric anomaly_rate_delta needs task anomaly-detection (a classifier "
    "reports no anomaly rate); use error_rate, latency_p95_seconds or fallback_rate"
)


_TASK_MINIMUMS = (
    f"(self.task == 'anomaly-detection' ? {cel_list(ANOMALY_MINIMUM_METRICS)} : "
    f"{cel_list(CLASSIFICATION_MINIMUM_METRICS)})"
)
MODEL_RULES: list[JsonDict] = [
    {
        "rule": "self.task != 'anomaly-detection' || !has(self.validation) || "
        f"!has(self.validation.metric) || self.validation.metric in {cel_list(ANOMALY_COMPARABLE)}",
        "message": METRIC_MESSAGE,
        "fieldPath": ".validation.metric",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.validation) || !has(self.validation.minimums) || "
        f"self.validation.minimums.all(k, k in {_TASK_MINIMUMS})",
        "message": MINIMUMS_TASK_MESSAGE,
        "fieldPath": ".validation.minimums",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.task == 'anomaly-detection' || !has(self.serving) || "
        "!has(self.serving.canary) || !has(self.serving.canary.abortMetric) || "
        "self.serving.canary.abortMetric != 'anomaly_rate_delta'",
        "message": ANOMALY_RATE_MESSAGE,
        "fieldPath": ".serving.canary.abortMetric",
        "reason": "FieldValueInvalid",
    },
    {
        # The field's own rule compares two values; setting or clearing it is a change too
        # (absent means "the registered data set's entity", which a later value may not be).
        "rule": "has(self.entityKey) == has(oldSelf.entityKey)",
        "message": IMMUTABLE_MESSAGES["entityKey"],
        "fieldPath": ".entityKey",
        "reason": "FieldValueForbidden",
    },
]


class ModelSpec(Spec):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": list(MODEL_RULES)})

    task: Task = Field(json_schema_extra=_immutable("task"))
    pipeline_ref: PipelineRef = Field(
        alias="pipelineRef", json_schema_extra=_immutable("pipelineRef")
    )
    feature_service: str | None = Field(
        default=None,
        alias="featureService",
        max_length=253,
        pattern=NAME_PATTERN,
        description="Feast feature service; empty means the Pipeline's.",
    )
    fallback_feature_service: str = Field(
        default="core_sensors",
        alias="fallbackFeatureService",
        max_length=253,
        pattern=NAME_PATTERN,
    )
    entity_key: str | None = Field(
        default=None,
        alias="entityKey",
        min_length=1,
        max_length=63,
        pattern=COLUMN_PATTERN,
        description="The entity (key) column of the data; letters, digits and _. Empty: the "
        "entity the data set was registered with; a run fails when they differ.",
        json_schema_extra=_immutable("entityKey"),
    )
    training: TrainingParams | None = Field(
        default=None,
        description="Overrides of the Pipeline's parameters: only the fields set here apply.",
    )
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    alarms: AlarmPolicy | None = Field(default=None, description=ALARMS_DESCRIPTION)
    batch: BatchSpec | None = Field(default=None, description=BATCH_DESCRIPTION)

    @model_validator(mode="after")
    def _policy_fits_task(self) -> ModelSpec:
        problem = policy_problem(self.task, self.validation)
        if problem:
            raise ValueError(problem)
        if (
            self.task != Task.ANOMALY_DETECTION
            and self.serving.canary.abort_metric == AbortMetric.ANOMALY_RATE_DELTA
        ):
            raise ValueError(ANOMALY_RATE_MESSAGE)
        return self


def immutable_changes(old: ModelSpec, new: ModelSpec) -> list[str]:
    """The messages of the fields `new` changes that cannot change on a live Model.

    The API server refuses these updates (transition rules); the operator can apply the same
    check to an object stored before the rules existed.
    """
    changed = []
    if old.task != new.task:
        changed.append(IMMUTABLE_MESSAGES["task"])
    if old.pipeline_ref != new.pipeline_ref:
        changed.append(IMMUTABLE_MESSAGES["pipelineRef"])
    if old.entity_key != new.entity_key:
        changed.append(IMMUTABLE_MESSAGES["entityKey"])
    return changed
