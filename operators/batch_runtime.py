"""The I/O around `builders.batch`: ask the pipeline backend about the Model's batch run, plan,
submit what the plan asks for.

Called from the Model's reconcile with the status as it was read, so the batch schedule
rides on the same per-Model lock, timer and status write as everything else the Model does.
A backend that is down raises `BackendUnavailable` to that reconcile (which records Degraded
and retries); one that refuses a run for good spends the slot and says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopline.operators.backends.pipelines import PipelineBackend
from loopline.operators.builders.batch import BatchObservation, plan_batch, rejected
from loopline.operators.builders.model_plan import Event
from loopline.operators.builders.runs import RunContext
from loopline.operators.errors import BackendRejected
from loopline.types.batch import BatchStatus
from loopline.types.model import ModelSpec
from loopline.types.status import ModelStatus


def _created(meta: dict[str, Any], now: datetime) -> datetime:
    text = meta.get("creationTimestamp")
    if not text:
        return now
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def reconcile_batch(
    pipelines: PipelineBackend,
    meta: dict[str, Any],
    spec: ModelSpec,
    status: ModelStatus,
    context: RunContext,
    now: datetime,
) -> tuple[BatchStatus | None, list[Event]]:
    """The Model's new `status.batch` and the Events to post."""
    batch = status.batch
    current = batch.current_run if batch is not None else None
    run = pipelines.status(current.run_id) if current is not None else None
    plan = plan_batch(
        BatchObservation(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            created=_created(meta, now),
            spec=spec.batch,
            status=batch,
            run=run,
            has_champion=status.champion is not None,
            now=now,
        ),
        context,
    )
    events = list(plan.events)
    new = plan.status
    if plan.submit is not None and new is not None:
        try:
            pipelines.submit(plan.submit)
        except BackendRejected as exc:
            new = rejected(new, plan.submit.run_id, str(exc), now)
            events = [Event("Warning", "BatchRunRejected", f"{plan.submit.run_id}: {exc}")]
    return new, events
