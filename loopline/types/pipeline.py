"""The Pipeline resource: a training pipeline template that Models reference by name.

A Pipeline says *how* to train (which KFP pipeline, default parameters, the Feast feature
service, an optional cron schedule, what happens when a new request arrives while a run is in
flight); a Model says *what* to train and overrides parameters. Scheduled runs are retraining
requests on every Model that references the Pipeline, so one code path starts every run.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from loopline.types.common import Spec
from loopline.types.policy import TrainingParams

# Five space-separated cron fields (minute hour day-of-month month day-of-week) made of digits,
# '*', ',', '-' and '/'; the operator's parser checks the ranges.
CRON_PATTERN = r"^\s*\S+\s+\S+\s+\S+\s+\S+\s+\S+\s*$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"


class ConcurrencyPolicy(StrEnum):
    """What a new run request does while a run of the same Model is in flight."""

    FORBID = "Forbid"  # the request waits until the running run finishes
    REPLACE = "Replace"  # the running run is cancelled and the new one starts


class PipelineSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.pipeline) != has(self.packageUri)",
                    "message": "set exactly one of spec.pipeline or spec.packageUri",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    pipeline: str | None = Field(
        default=None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Name of a pipeline in loopline.pipelines (e.g. training).",
    )
    package_uri: str | None = Field(
        default=None,
        alias="packageUri",
        max_length=1024,
        description="Reference to a compiled KFP package (IR YAML) instead of a named pipeline.",
    )
    parameters: TrainingParams = Field(
        default_factory=TrainingParams,
        description="Default training parameters; a Model's spec.training overrides them.",
    )
    feature_service: str = Field(
        default="all_sensors",
        alias="featureService",
        max_length=253,
        pattern=NAME_PATTERN,
        description="Feast feature service the pipeline reads when a Model does not say.",
    )
    schedule: str | None = Field(
        default=None,
        max_length=100,
        pattern=CRON_PATTERN,
        description="Cron schedule (UTC, five fields) for retraining every Model using this "
        "Pipeline; empty means no scheduled runs.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID,
        alias="concurrencyPolicy",
        description="Forbid: a new request waits for the run in flight; Replace: it cancels it.",
    )
    history_limit: int = Field(
        default=10,
        alias="historyLimit",
        ge=1,
        le=100,
        description="How many recent runs status.recentRuns keeps.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PipelineSpec:
        if (self.pipeline is None) == (self.package_uri is None):
            raise ValueError("set exactly one of spec.pipeline or spec.packageUri")
        return self
