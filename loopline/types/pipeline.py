"""The Pipeline resource: a training pipeline template that Models reference by name.

A Pipeline says *how* to train (which KFP pipeline, default parameters, the Feast feature
service, an optional cron schedule, what happens when a new request arrives while a run is in
flight); a Model says *what* to train and overrides parameters. Scheduled runs are retraining
requests on every Model that references the Pipeline, so one code path starts every run.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from loopline.types.common import Spec
from loopline.types.policy import TrainingParams, cel_list

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"

# The pipelines `loopline.pipelines.training.PIPELINES` defines (a unit test compares): both
# backends look a name up there (the local one in PIPELINES, the KFP one as
# `loopline/pipelines/compiled/<name>.yaml`), so no other name can run.
PIPELINE_NAMES: tuple[str, ...] = ("training",)


def _cron_field(number: str) -> str:
    """One cron field: a comma list of `*`, `n` or `a-b`, each with an optional `/step`
    (no backslashes, so the same text is a Python, RE2 and CEL-string regex)."""
    item = f"([*]|{number}(-{number})?)(/0*[1-9][0-9]*)?"
    return f"{item}(,{item})*"


# Exactly what the operator's cron parser accepts, less what it accepts only by accident
# (signs, underscores, tabs): minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of
# week 0-7. That a range's start is not after its end is the second of SCHEDULE_RULES.
CRON_PATTERN = (
    "^ *"
    + " +".join(
        _cron_field(n)
        for n in (
            "0*[1-5]?[0-9]",
            "0*(1?[0-9]|2[0-3])",
            "0*([1-9]|[12][0-9]|3[01])",
            "0*([1-9]|1[0-2])",
            "0*[0-7]",
        )
    )
    + " *$"
)
CRON_MESSAGE = (
    "schedule must be five space-separated cron fields: minute 0-59, hour 0-23, day of month "
    "1-31, month 1-12, day of week 0-7, each *, a number, a range a-b or a list of them, "
    'optionally /step (e.g. "0 3 * * 0")'
)
CRON_ORDER_MESSAGE = "schedule: a range a-b must not start after it ends (e.g. 5-1)"
PIPELINE_MESSAGE = (
    f"pipeline must be one of the pipelines Loopline ships: {', '.join(PIPELINE_NAMES)}"
)
PACKAGE_URI_MESSAGE = (
    "packageUri must name a package compiled into loopline.pipelines ("
    + ", ".join(PIPELINE_NAMES)
    + "): the backends fetch no file or URL"
)
SOURCE_MESSAGE = "set exactly one of spec.pipeline or spec.packageUri"

# CEL's int() of each range's ends (`a-b` appears in a valid schedule only as a range); guarded
# by the pattern so it never sees a non-number.
_CRON_RANGES = "self.findAll('[0-9]+-[0-9]+').all(r, int(r.split('-')[0]) <= int(r.split('-')[1]))"
SCHEDULE_RULES: list[JsonDict] = [
    {
        "rule": f"self.matches('{CRON_PATTERN}')",
        "messageExpression": f"'{CRON_MESSAGE}; got ' + self",
        "message": CRON_MESSAGE,
        "reason": "FieldValueInvalid",
    },
    {
        "rule": f"!self.matches('{CRON_PATTERN}') || {_CRON_RANGES}",
        "message": CRON_ORDER_MESSAGE,
        "reason": "FieldValueInvalid",
    },
]


def schedule_problem(text: str) -> str | None:
    """The message of the first schedule rule `text` breaks, or None."""
    if not re.fullmatch(CRON_PATTERN, text):
        return f"{CRON_MESSAGE}; got {text}"
    for span in re.findall("[0-9]+-[0-9]+", text):
        start, end = span.split("-")
        if int(start) > int(end):
            return CRON_ORDER_MESSAGE
    return None


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
                    "message": SOURCE_MESSAGE,
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    pipeline: str | None = Field(
        default=None,
        max_length=63,
        description="Name of a pipeline in loopline.pipelines: " + ", ".join(PIPELINE_NAMES) + ".",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self in {cel_list(PIPELINE_NAMES)}",
                    "message": PIPELINE_MESSAGE,
                    "reason": "FieldValueInvalid",
                }
            ]
        },
    )
    package_uri: str | None = Field(
        default=None,
        alias="packageUri",
        max_length=63,
        description="A compiled KFP package of loopline.pipelines by name (its IR YAML ships "
        "in loopline/pipelines/compiled/); no file or URL is fetched.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self in {cel_list(PIPELINE_NAMES)}",
                    "message": PACKAGE_URI_MESSAGE,
                    "reason": "FieldValueInvalid",
                }
            ]
        },
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
        description="Cron schedule (UTC, five fields) for retraining every Model using this "
        "Pipeline; empty means no scheduled runs.",
        json_schema_extra={"x-kubernetes-validations": list(SCHEDULE_RULES)},
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

    @field_validator("pipeline")
    @classmethod
    def _known_pipeline(cls, value: str | None) -> str | None:
        if value is not None and value not in PIPELINE_NAMES:
            raise ValueError(PIPELINE_MESSAGE)
        return value

    @field_validator("package_uri")
    @classmethod
    def _known_package(cls, value: str | None) -> str | None:
        if value is not None and value not in PIPELINE_NAMES:
            raise ValueError(PACKAGE_URI_MESSAGE)
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        problem = None if value is None else schedule_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PipelineSpec:
        if (self.pipeline is None) == (self.package_uri is None):
            raise ValueError(SOURCE_MESSAGE)
        return self
