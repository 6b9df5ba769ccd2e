"""A Model's scheduled batch scoring as a pure function: observed -> runs to start, status.

Each slot of `spec.batch.schedule` is one run, whose id derives from the Model's uid and the
slot's time (`batch_run_id`). The slot is recorded in `status.batch.lastScheduleTime` when its
run is submitted; if that status write is lost (the operator restarted in between), the next
reconcile finds the same slot, asks for the same run id, and the backend (keyed by run id)
adopts the run instead of starting another. So a slot never gets a second run.

Missed slots (operator down, a run still in flight when the next slot came): only the latest
one runs, scoring the window that ends at it; the slots in between are skipped, as a CronJob
with `concurrencyPolicy: Forbid` and no deadline would. A Model with no champion yet waits
(unless `spec.batch.version` names one): there is nothing to score with, and the slot runs
once there is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime

from loopline.operators.builders.batch_usage import count_run
from loopline.operators.builders.cron import CronError, CronSchedule
from loopline.operators.builders.model_plan import TERMINAL, Event
from loopline.operators.builders.runs import RunContext
from loopline.types.batch import BatchRunRecord, BatchRunSpec, BatchSpec, BatchStatus
from loopline.types.common import registered_model_name
from loopline.types.runs import RunPhase, TrainingRunResult

_PREFIX_MAX = 30


def _prefix(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:_PREFIX_MAX].strip("-") or "model"


def batch_run_id(name: str, uid: str, slot: datetime) -> str:
    """`<name>-batch-<slot>-<uid digest>`: readable, a DNS label (at most 56 characters), and
    distinct for same-named Models in two namespaces (the uid)."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:6]
    return f"{_prefix(name)}-batch-{slot.strftime('%Y%m%d%H%M')}-{digest}"


def manual_run_id(namespace: str, name: str, *parts: object) -> str:
    """The run id of a `loopline score --submit` request: the same request, the same run."""
    text = "\0".join([namespace, name, *(str(p) for p in parts)])
    return f"{_prefix(name)}-batch-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def build_batch_run_spec(
    *,
    namespace: str,
    name: str,
    uid: str,
    batch: BatchSpec,
    slot: datetime,
    context: RunContext,
) -> BatchRunSpec:
    """The run of one slot: the window [slot - window, slot)."""
    return BatchRunSpec(
        run_id=batch_run_id(name, uid, slot),
        namespace=namespace,
        model_name=name,
        registered_model_name=registered_model_name(namespace, name),
        version=batch.version,
        window_start=slot - batch.window_length,
        window_end=slot,
        scheduled_time=slot,
        output=batch.output,
        memory_mib=batch.memory_mib,
        mlflow_tracking_uri=context.mlflow_tracking_uri,
        feature_repo=context.feature_repo,
    )


@dataclass(frozen=True)
class BatchObservation:
    namespace: str
    name: str
    uid: str
    created: datetime
    spec: BatchSpec | None
    status: BatchStatus | None
    run: TrainingRunResult | None  # the backend's view of status.currentRun; None: unknown
    has_champion: bool
    now: datetime


@dataclass
class BatchPlan:
    status: BatchStatus | None
    submit: BatchRunSpec | None = None
    events: list[Event] = field(default_factory=list)


def record_of(spec: BatchRunSpec, batch: BatchSpec, slot: datetime) -> BatchRunRecord:
    return BatchRunRecord(
        run_id=spec.run_id,
        scheduled_time=slot,
        window_start=slot - batch.window_length,
        window_end=slot,
        phase=RunPhase.PENDING,
        model_version=spec.version,
    )


def fold_batch_result(record: BatchRunRecord, result: TrainingRunResult) -> BatchRunRecord:
    rows = result.metrics.get("batch_rows")
    return record.model_copy(
        update={
            "phase": result.phase,
            "message": result.message,
            "model_version": result.model_version or record.model_version,
            "mlflow_run_id": result.mlflow_run_id or record.mlflow_run_id,
            "rows": int(rows) if rows is not None else record.rows,
            "started_at": result.started_at or record.started_at,
            "finished_at": result.finished_at,
        }
    )


def _follow(obs: BatchObservation, st: BatchStatus, plan: BatchPlan, ctx: RunContext) -> None:
    """The run in flight, as the backend sees it; a finished one becomes lastRun."""
    current = st.current_run
    if current is None:
        return
    if obs.run is None:
        if obs.spec is None:  # unknown to the backend and no longer wanted
            plan.status = st.model_copy(update={"current_run": None})
            return
        # Unknown to the backend (a KFP backend after a restart, a Job gone): submit the same
        # run id again, which the backend adopts if it exists.
        plan.submit = build_batch_run_spec(
            namespace=obs.namespace,
            name=obs.name,
            uid=obs.uid,
            batch=obs.spec,
            slot=current.scheduled_time,
            context=ctx,
        )
        return
    folded = fold_batch_result(current, obs.run)
    if folded.phase not in TERMINAL:
        plan.status = st.model_copy(update={"current_run": folded})
        return
    update: dict[str, object] = {"current_run": None, "last_run": folded}
    if st.last_run is None or st.last_run.run_id != folded.run_id:  # once per run id
        update["usage"] = count_run(st.usage, folded, obs.run.metrics.get("batch_fallback_rows"))
    if folded.phase == RunPhase.SUCCEEDED:
        update["last_succeeded"] = folded
        plan.events.append(
            Event("Normal", "BatchRunSucceeded", f"batch run {folded.run_id}: {folded.message}")
        )
    elif folded.phase == RunPhase.FAILED:
        plan.events.append(
            Event(
                "Warning",
                "BatchRunFailed",
                f"batch run {folded.run_id} failed: {folded.message or 'no message'}",
            )
        )
    else:
        plan.events.append(Event("Normal", "BatchRunCancelled", f"batch run {folded.run_id}"))
    plan.status = st.model_copy(update=update)


def plan_batch(obs: BatchObservation, context: RunContext) -> BatchPlan:
    if obs.spec is None and obs.status is None:
        return BatchPlan(status=None)
    plan = BatchPlan(status=obs.status or BatchStatus())
    _follow(obs, plan.status or BatchStatus(), plan, context)
    st = plan.status or BatchStatus()
    if obs.spec is None:
        plan.status = st.model_copy(update={"next_schedule_time": None, "message": ""})
        return plan
    try:
        cron = CronSchedule.parse(obs.spec.schedule)
        since = max(st.last_schedule_time or obs.created, obs.created)
        slot = cron.latest_at_or_before(obs.now, since)
        next_slot = cron.next_after(obs.now)
    except CronError as exc:
        plan.status = st.model_copy(update={"message": f"spec.batch.schedule: {exc}"})
        return plan
    message = ""
    if slot is not None and st.current_run is not None:
        message = f"slot {slot.isoformat()} waits for batch run {st.current_run.run_id}"
    elif slot is not None and obs.spec.version is None and not obs.has_champion:
        message = (
            f"slot {slot.isoformat()} waits for a champion to score with "
            "(or set spec.batch.version)"
        )
    elif slot is not None:
        run = build_batch_run_spec(
            namespace=obs.namespace,
            name=obs.name,
            uid=obs.uid,
            batch=obs.spec,
            slot=slot,
            context=context,
        )
        plan.submit = run
        st = st.model_copy(
            update={"current_run": record_of(run, obs.spec, slot), "last_schedule_time": slot}
        )
        plan.events.append(
            Event(
                "Normal",
                "BatchRunStarted",
                f"batch run {run.run_id} scores [{run.window_start:%Y-%m-%dT%H:%MZ}, "
                f"{slot:%Y-%m-%dT%H:%MZ}) for slot {slot.isoformat()}",
            )
        )
    plan.status = st.model_copy(update={"next_schedule_time": next_slot, "message": message})
    return plan


def rejected(status: BatchStatus, run_id: str, why: str, now: datetime) -> BatchStatus:
    """The status after the backend refused a run for good: the slot is spent (retrying the
    same refusal every reconcile helps nobody), the run recorded as failed."""
    current = status.current_run
    if current is None or current.run_id != run_id:
        return status.model_copy(update={"message": f"batch run {run_id} refused: {why}"})
    failed = current.model_copy(
        update={"phase": RunPhase.FAILED, "message": f"refused: {why}", "finished_at": now}
    )
    return status.model_copy(update={"current_run": None, "last_run": failed})
