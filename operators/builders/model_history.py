"""The ledger entries of the reconcile phases that only observe: a spec written, a run that
finished with its gate report (pure)."""

from __future__ import annotations

from loopline.operators.builders.history import spec_actor
from loopline.operators.builders.model_plan import ModelObservation, Work
from loopline.types.history import DecisionKind
from loopline.types.runs import RunPhase, TrainingRunResult
from loopline.types.status import RunRecord


def record_spec_change(w: Work, obs: ModelObservation) -> None:
    """A generation the status has not seen yet: the spec was created or changed."""
    seen = obs.status.observed_generation
    if obs.generation <= seen:
        return
    actor = obs.spec_actor or spec_actor(None)
    w.decide(
        obs.now,
        DecisionKind.SPEC_CHANGED,
        actor=actor,
        generation=obs.generation,
        outcome="created" if seen == 0 else "changed",
        message=f"generation {seen} -> {obs.generation}" if seen else "the Model was created",
        evidence={"previousGeneration": seen} if seen else {},
    )


def finished(w: Work, obs: ModelObservation, run: RunRecord, result: TrainingRunResult) -> None:
    """A run that ended: its outcome, and for a successful one the gate's verdict with the
    metrics of both the challenger and the champion it was compared with."""
    w.decide(
        obs.now,
        DecisionKind.RUN_FINISHED,
        version=run.model_version,
        generation=run.generation,
        run_id=run.run_id,
        outcome=run.phase.value,
        message=run.message,
        evidence={
            "trigger": run.trigger.value,
            "step": run.step,
            "mlflowRunId": run.mlflow_run_id,
            "startedAt": run.started_at.isoformat() if run.started_at else None,
            "finishedAt": run.finished_at.isoformat() if run.finished_at else None,
        },
    )
    if run.phase != RunPhase.SUCCEEDED:
        return
    champion = w.champion
    passed = bool(run.gate_passed and run.model_version)
    w.decide(
        obs.now,
        DecisionKind.GATE_DECIDED,
        version=run.model_version,
        run_id=run.run_id,
        outcome="passed" if passed else "rejected",
        message=result.rejection_reason or result.message or "",
        evidence={
            "challenger": dict(result.metrics),
            "championVersion": champion.version if champion else None,
            "champion": dict(champion.metrics) if champion else {},
            "policy": obs.spec.validation.model_dump(mode="json", by_alias=True),
        },
    )
