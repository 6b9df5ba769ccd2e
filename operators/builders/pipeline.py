"""The Pipeline reconciler as a pure function.

A Pipeline's status aggregates the runs of the Models that use it (newest first), and its cron
schedule turns into retraining requests on those Models (the same annotations the
monitor writes, trigger `schedule`), so scheduled runs take the same road as manual and drift-triggered ones: recorded
on the Model, one run per request id, idempotent across operator restarts (the request id is
the schedule tick's time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loopline.operators.builders.conditions import set_condition
from loopline.operators.builders.cron import CronError, CronSchedule
from loopline.types.pipeline import PipelineSpec
from loopline.types.runs import RunPhase
from loopline.types.status import ModelStatus, PipelineStatus, RunRecord

# A schedule tick missed by more than this (operator down) is skipped, like a CronJob's
# startingDeadlineSeconds: a week-long outage should not fire one run per missed tick.
MISSED_TICK_DEADLINE = timedelta(hours=1)


@dataclass(frozen=True)
class ScheduledRequest:
    model: str
    request_id: str
    reason: str  # JSON for the loopline.dev/retrain-reason annotation


@dataclass
class PipelinePlan:
    status: PipelineStatus
    requests: list[ScheduledRequest] = field(default_factory=list)
    error: str = ""


def schedule_request_id(tick: datetime) -> str:
    return f"schedule-{tick.strftime('%Y%m%dT%H%MZ')}"


def reconcile_pipeline(
    spec: PipelineSpec,
    status: PipelineStatus,
    generation: int,
    created: datetime,
    models: dict[str, ModelStatus],
    now: datetime,
) -> PipelinePlan:
    runs: list[RunRecord] = []
    for model_name, model_status in models.items():
        records = list(model_status.runs)
        if model_status.current_run is not None:
            records.insert(0, model_status.current_run)
        runs.extend(r.model_copy(update={"model": model_name}) for r in records)
    epoch = datetime.min.replace(tzinfo=now.tzinfo)
    runs.sort(key=lambda r: (r.started_at or epoch, r.run_id), reverse=True)
    successes = [r.finished_at for r in runs if r.phase == RunPhase.SUCCEEDED and r.finished_at]
    last_success = max(successes, default=status.last_success)

    requests: list[ScheduledRequest] = []
    error = ""
    last_tick = status.last_schedule_time
    next_tick = None
    if spec.schedule:
        try:
            cron = CronSchedule.parse(spec.schedule)
            since = max(last_tick or created, now - MISSED_TICK_DEADLINE)
            tick = cron.last_at_or_before(now, since)
            if tick is not None and (last_tick is None or tick > last_tick):
                reason = json.dumps({"trigger": "schedule", "schedule": spec.schedule})
                requests = [
                    ScheduledRequest(name, schedule_request_id(tick), reason)
                    for name in sorted(models)
                ]
                last_tick = tick
            next_tick = cron.next_after(now)
        except CronError as exc:
            error = f"spec.schedule: {exc}"

    conditions = set_condition(
        list(status.conditions),
        "Ready",
        not error,
        "ScheduleInvalid" if error else "AsExpected",
        error,
        generation,
        now,
    )
    new_status = PipelineStatus(
        observed_generation=generation,
        models=sorted(models),
        recent_runs=runs[: spec.history_limit],
        last_success=last_success,
        last_schedule_time=last_tick,
        next_schedule_time=next_tick,
        conditions=conditions,
    )
    return PipelinePlan(status=new_status, requests=requests, error=error)
