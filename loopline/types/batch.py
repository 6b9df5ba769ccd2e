"""Batch scoring as a pipeline run: the Model's `spec.batch`, the run spec, and its status.

The schedule sits on the Model, not the Pipeline: what a batch run scores (which version, which
window, where the scores go) belongs to one Model, while a Pipeline is a training template that
many Models share. A Pipeline's schedule retrains every Model using it; a Model's `spec.batch`
scores with that Model alone.

`BatchRunSpec` travels through the same pipeline backends as a `TrainingRunSpec` (a local
worker, a Kubernetes Job, a KFP run, all keyed by run id) and comes back as the same
`TrainingRunResult`; `pipeline` (always `batch-scoring`) tells the runner which one it holds.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator

from loopline.types.common import Spec
from loopline.types.pipeline import SCHEDULE_RULES, schedule_problem
from loopline.types.runs import RunPhase, TrainingRunSpec

BATCH_PIPELINE = "batch-scoring"
BATCH_STEP = "score-window"
WINDOW_PATTERN = r"^[1-9][0-9]{0,4}[mhd]$"
WINDOW_MESSAGE = "window must be a duration such as 30m, 24h or 7d (minutes, hours or days)"
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
DEFAULT_MEMORY_MIB = 512
# The usage caller of scheduled runs: in MLflow (`loopline.batch.caller`) and in the operator's
# `loopline_usage_*` series alike.
SCHEDULE_CALLER = "schedule"


def window_length(text: str) -> timedelta:
    """`24h` -> 24 hours; ValueError naming the field otherwise."""
    if not re.fullmatch(WINDOW_PATTERN, text):
        raise ValueError(f"{WINDOW_MESSAGE}; got {text!r}")
    return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})


BATCH_DESCRIPTION = (
    "Scheduled batch scoring of this Model: every `schedule` slot scores the `window` ending "
    "then (docs/batch.md); empty: no scheduled scoring."
)


class BatchSpec(Spec):
    """A Model's scheduled batch scoring: at every `schedule` time, score the `window` ending
    then with `version` (default the champion) and register the scores as a feature view."""

    schedule: str = Field(
        max_length=100,
        description="Cron schedule (UTC, five fields) of the batch runs, e.g. '0 2 * * *'.",
        json_schema_extra={"x-kubernetes-validations": list(SCHEDULE_RULES)},
    )
    window: str = Field(
        default="24h",
        pattern=WINDOW_PATTERN,
        description="How much data a run scores: the window [t - window, t) ending at the "
        "scheduled time t (30m, 24h, 7d).",
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*$",
        max_length=10,
        description="Registered version to score with; empty: the champion when the run starts.",
    )
    output: str | None = Field(
        default=None,
        max_length=1024,
        description="Folder for the scores as the run sees it; empty: "
        "<feature repo>/data/scores/scores_<namespace>_<name>.",
    )
    memory_mib: int = Field(
        default=DEFAULT_MEMORY_MIB,
        alias="memoryMib",
        ge=16,
        le=65536,
        description="Working memory of one chunk (rows read and scored at a time).",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = schedule_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def window_length(self) -> timedelta:
        return window_length(self.window)


class BatchRunSpec(Spec):
    """One batch scoring run, as the operator or `loopline score --submit` asks for it."""

    run_id: str = Field(alias="runId", description="Derived from the Model and the slot.")
    namespace: str
    model_name: str = Field(alias="modelName")
    registered_model_name: str = Field(alias="registeredModelName")
    pipeline: Literal["batch-scoring"] = "batch-scoring"  # BATCH_PIPELINE
    version: str | None = Field(default=None, description="None: the champion at run time.")
    window_start: datetime | None = Field(default=None, alias="windowStart")
    window_end: datetime | None = Field(default=None, alias="windowEnd")
    scheduled_time: datetime | None = Field(
        default=None, alias="scheduledTime", description="The schedule slot; None if manual."
    )
    output: str | None = None
    memory_mib: int = Field(default=DEFAULT_MEMORY_MIB, alias="memoryMib", ge=16)
    mlflow_tracking_uri: str = Field(alias="mlflowTrackingUri")
    feature_repo: str = Field(alias="featureRepo", description="Path of the Feast repo.")


RunSpec = TrainingRunSpec | BatchRunSpec


def parse_run_spec(text: str) -> RunSpec:
    """A run spec file's JSON as the spec it is: batch when `pipeline` says so."""
    import json

    data = json.loads(text)
    if isinstance(data, dict) and data.get("pipeline") == BATCH_PIPELINE:
        return BatchRunSpec.model_validate(data)
    return TrainingRunSpec.model_validate(data)


class BatchRunRecord(Spec):
    """One batch run as the Model's status lists it."""

    run_id: str = Field(alias="runId")
    scheduled_time: datetime = Field(alias="scheduledTime")
    window_start: datetime = Field(alias="windowStart")
    window_end: datetime = Field(alias="windowEnd")
    phase: RunPhase
    message: str = ""
    model_version: str | None = Field(default=None, alias="modelVersion")
    mlflow_run_id: str | None = Field(default=None, alias="mlflowRunId")
    rows: int | None = Field(default=None, ge=0, description="Rows scored (when succeeded).")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")


USAGE_ENTRIES = 64  # (version, outcome) totals kept; the oldest versions' go first


class BatchUsage(Spec):
    """Scheduled batch runs of one version that ended one way, counted once each in the same
    status write that moves the run from currentRun to lastRun; the operator exports them as
    `loopline_usage_*` series (docs/batch.md, "Model usage")."""

    version: str = Field(description="The version that scored ('' when unknown).")
    outcome: Literal["ok", "server_error"] = Field(
        description="ok: the run succeeded; server_error: it failed or was cancelled."
    )
    runs: int = Field(default=0, ge=0)
    rows: int = Field(default=0, ge=0, description="Rows scored.")
    fallback_rows: int = Field(
        default=0, ge=0, alias="fallbackRows", description="Rows the fallback model scored."
    )


class BatchStatus(Spec):
    """Where the Model's batch schedule stands."""

    last_schedule_time: datetime | None = Field(
        default=None,
        alias="lastScheduleTime",
        description="The latest slot a run was started for (one run per slot).",
    )
    next_schedule_time: datetime | None = Field(default=None, alias="nextScheduleTime")
    current_run: BatchRunRecord | None = Field(default=None, alias="currentRun")
    last_run: BatchRunRecord | None = Field(
        default=None, alias="lastRun", description="The last batch run that finished."
    )
    last_succeeded: BatchRunRecord | None = Field(
        default=None, alias="lastSucceeded", description="The last batch run that succeeded."
    )
    message: str = Field(default="", description="Why no run started when one was due.")
    usage: list[BatchUsage] = Field(
        default_factory=list,
        max_length=USAGE_ENTRIES,
        description="Finished scheduled runs, rows and fallback rows per version and outcome, "
        "since the schedule began (each run counted once).",
    )
