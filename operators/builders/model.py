"""The Model reconciler as a pure function: what was observed -> what to do and what to report.

`reconcile_model` folds the pipeline backend's view of the current run and the serving
backend's view of the deployment into the Model's status, decides whether a run must start
(a training-relevant spec change, or a retraining request annotated on the Model), walks a
canary through its steps, and derives the phase, conditions and Events. It never reads a clock
or a server, so a restarted operator given the same inputs makes the same decision, and the run
id it asks for is the one the backend already knows.
"""

from __future__ import annotations

from collections.abc import Mapping

from loopline.operators.builders.approval import (
    approval_required,
    decide_approval,
    request_approval,
    start_rollout,
)
from loopline.operators.builders.model_plan import (
    RUN_HISTORY,
    TERMINAL,
    ChampionAlias,
    Event,
    ModelObservation,
    ModelPlan,
    RolloutMark,
    Work,
    drift_from_reason,
    drift_start_of,
    fold_result,
    mark_degraded,
    mark_failed,
    parse_retrain_request,
    rollout_marks,
)
from loopline.operators.builders.model_status import conditions_of, phase_of
from loopline.operators.builders.rollout import advance_rollout
from loopline.operators.builders.runs import (
    RunContext,
    build_run_spec,
    run_id,
    training_hash,
)
from loopline.operators.builders.serving import UNHEALTHY, build_serving
from loopline.types.common import (
    Trigger,
    registered_model_name,
)
from loopline.types.model import Protocol
from loopline.types.pipeline import ConcurrencyPolicy, PipelineSpec
from loopline.types.runs import RunPhase
from loopline.types.status import (
    DriftStatus,
    Endpoints,
    ModelPhase,
    ModelStatus,
    RunRecord,
    VersionRef,
)

# Re-exported: the reconciler's callers read its plan types from here.
__all__ = [
    "ChampionAlias",
    "Event",
    "ModelObservation",
    "ModelPlan",
    "RolloutMark",
    "drift_start_of",
    "mark_degraded",
    "mark_failed",
    "parse_retrain_request",
    "reconcile_model",
]


def _fold_current_run(w: Work, obs: ModelObservation) -> None:
    """1. The current run, as the backend sees it; a finished one moves to the history."""
    if w.current is None or obs.run is None:
        return
    current = fold_result(w.current, obs.run)
    w.current = current
    if current.phase not in TERMINAL:
        return
    w.runs = [current, *w.runs][:RUN_HISTORY]
    version = current.model_version
    if current.phase == RunPhase.SUCCEEDED and current.gate_passed and version:
        w.challenger = VersionRef(version=version, run_id=current.run_id, metrics=obs.run.metrics)
        then = "awaiting approval" if approval_required(obs) else "rolling out"
        w.event(
            "Normal",
            "TrainingSucceeded",
            f"run {current.run_id} registered version {version}; {then}",
        )
        if approval_required(obs):
            request_approval(w, obs, version)
        else:
            start_rollout(w, obs, version)
    elif current.phase == RunPhase.SUCCEEDED:
        why = obs.run.rejection_reason or obs.run.message or "it did not beat the champion"
        w.event(
            "Warning",
            "ChallengerRejected",
            f"run {current.run_id}: version {version or '-'} rejected by the gate: {why}",
        )
    elif current.phase == RunPhase.FAILED:
        w.event(
            "Warning",
            "TrainingFailed",
            f"run {current.run_id} failed at step {current.step or '-'}: "
            f"{current.message or 'no message'}",
        )
    else:
        w.event("Normal", "RunCancelled", f"run {current.run_id} cancelled")
    w.current = None


def _take_retrain_request(w: Work, obs: ModelObservation) -> None:
    """2. A new retraining request (annotation), recorded once per request id."""
    request = parse_retrain_request(obs.annotations, obs.now)
    known = {r.request_id for r in (w.retraining, w.pending) if r is not None}
    if request is None or request.request_id in known:
        return
    if request.trigger == Trigger.DRIFT:
        w.drift = drift_from_reason(request.reason, obs.now)
    drift = w.drift
    detail = f" (features: {', '.join(drift.features)})" if drift and drift.features else ""
    w.event(
        "Normal",
        "RetrainRequested",
        f"request {request.request_id} ({request.trigger.value}){detail}",
    )
    if request.trigger == Trigger.DRIFT and not obs.spec.monitoring.retrain_on_drift:
        w.retraining = request
        w.event(
            "Warning",
            "RetrainIgnored",
            f"request {request.request_id}: drift retraining is off "
            "(spec.monitoring.retrainOnDrift: false)",
        )
    else:
        w.pending = request


def _follow_drift_check(w: Work, obs: ModelObservation) -> None:
    """The monitor's latest test: record when it ran and what it saw. Drifted follows the
    monitor's hysteresis, not single windows: it turns on when K windows in a row drifted
    (also when the monitor is not asked to request retraining) and off when K in a row
    tested stable, or when a new champion is promoted (`advance_rollout`)."""
    check, drift = obs.drift_check, w.drift
    if check is None:
        return
    if drift is not None and drift.last_check is not None and check.last_check <= drift.last_check:
        return
    was = drift is not None and drift.drifted
    w.drift = DriftStatus(
        drifted=check.confirmed or (was and not check.settled),
        last_check=check.last_check,
        features=check.features or (drift.features if drift else []),
        p_values=check.p_values,
    )


def _start_run(w: Work, obs: ModelObservation, pipeline: PipelineSpec, ctx: RunContext) -> None:
    """3. Start a run when a cause is waiting and nothing blocks it; ask the backend again
    for a recorded run it lost."""
    spec = obs.spec
    new_hash = training_hash(pipeline, spec)
    cause: tuple[Trigger, str] | None = None
    if w.pending is not None:
        cause = (w.pending.trigger, w.pending.request_id)
    elif w.thash != new_hash:
        cause = (Trigger.SPEC_CHANGE, new_hash)
    replace = pipeline.concurrency_policy == ConcurrencyPolicy.REPLACE
    if cause is not None and w.current is not None and replace:
        w.cancel = w.current.run_id
        cancelled = w.current.model_copy(
            update={"phase": RunPhase.CANCELLED, "finished_at": obs.now}
        )
        w.runs = [cancelled, *w.runs][:RUN_HISTORY]
        w.event("Normal", "RunReplaced", f"run {w.current.run_id} replaced by a new one")
        w.current = None
    parent = w.champion.version if w.champion else None
    if cause is not None and w.current is None:
        trigger, key = cause
        rid = run_id(obs.uid, obs.generation, trigger, key, obs.name)
        w.submit = build_run_spec(
            run_id_=rid,
            namespace=obs.namespace,
            name=obs.name,
            trigger=trigger,
            model=spec,
            pipeline=pipeline,
            context=ctx,
            parent_version=parent,
            drift_start=drift_start_of(w.pending),
        )
        w.current = RunRecord(
            run_id=rid,
            trigger=trigger,
            generation=obs.generation,
            request_id=w.pending.request_id if w.pending else None,
            phase=RunPhase.PENDING,
            started_at=obs.now,
        )
        if w.pending is not None:
            w.retraining = w.pending.model_copy(update={"run_id": rid})
            w.pending = None
        w.thash = new_hash
        w.event("Normal", "TrainingStarted", f"run {rid} started ({trigger.value})")
    if w.submit is None and w.current is not None and obs.run is None:
        # The backend does not know a run we recorded (its state was lost): ask again
        # under the same id, so it is still one run for this cause.
        same = w.retraining is not None and w.retraining.run_id == w.current.run_id
        w.submit = build_run_spec(
            run_id_=w.current.run_id,
            namespace=obs.namespace,
            name=obs.name,
            trigger=w.current.trigger,
            model=spec,
            pipeline=pipeline,
            context=ctx,
            parent_version=parent,
            drift_start=drift_start_of(w.retraining if same else None),
        )


def endpoints_of(observed: Mapping[str, str], protocol: Protocol) -> Endpoints:
    """The status endpoints, with the one of the Model's `serving.protocol` as `primary`."""
    rest, grpc = observed.get("rest"), observed.get("grpc")
    return Endpoints(rest=rest, grpc=grpc, primary=grpc if protocol == Protocol.GRPC else rest)


def reconcile_model(obs: ModelObservation, context: RunContext) -> ModelPlan:
    """The Model's next status and what to do about it, from one observation (pure).

    The phases run in order over one working state: the current run's result, a new
    retraining request, the monitor's latest test, starting a run, the canary rollout, then
    the serving wanted, the phase and the conditions."""
    st = obs.status
    w = Work.of(st)
    _fold_current_run(w, obs)
    approval_marks = decide_approval(w, obs, obs.approvals)
    _take_retrain_request(w, obs)
    _follow_drift_check(w, obs)
    if obs.pipeline is not None:
        _start_run(w, obs, obs.pipeline, context)
    scaled_to_zero = obs.spec.serving.replicas == 0
    serving = None if scaled_to_zero else obs.serving
    advance_rollout(w, obs, serving)

    champion, rollout = w.champion, w.rollout
    desired = build_serving(
        obs.namespace,
        obs.name,
        obs.spec,
        champion.version if champion else None,
        rollout.version if rollout else None,
        rollout.weight if rollout else 0,
    )
    serving_ready = (
        champion is not None
        and serving is not None
        and serving.ready
        and serving.champion_version == champion.version
    )
    # Deployed, then stopped serving (a model unloaded, a process that died): reported as
    # Degraded with the backend's reason while the serving backend repairs it.
    unhealthy = (
        champion is not None
        and serving is not None
        and not serving.ready
        and serving.reason in UNHEALTHY
        and serving.champion_version == champion.version
    )
    endpoints = st.endpoints
    if scaled_to_zero:
        desired, endpoints = None, None
    if serving is not None and serving.endpoints:
        endpoints = endpoints_of(serving.endpoints, obs.spec.serving.protocol)

    unwell = serving if unhealthy else None
    phase, message = phase_of(w, obs, serving, serving_ready, unwell)
    conditions = conditions_of(w, obs, phase, message, serving, serving_ready, endpoints, unwell)
    if phase != st.phase:
        w.event(
            "Warning" if phase in (ModelPhase.FAILED, ModelPhase.DEGRADED) else "Normal",
            phase.value.replace(" ", ""),
            f"{st.phase.value} -> {phase.value}: {message}",
        )
    status = ModelStatus(
        phase=phase,
        message=message,
        observed_generation=obs.generation,
        conditions=conditions,
        current_run=w.current,
        runs=w.runs,
        champion=champion,
        challenger=w.challenger,
        rollout=rollout,
        endpoints=endpoints,
        drift=w.drift,
        retraining=w.retraining,
        training_hash=w.thash,
        pending_request=w.pending,
        history=st.history,
        approval=w.approval,
        batch=st.batch,  # the batch schedule's own (operators.batch_runtime)
    )
    registered = registered_model_name(obs.namespace, obs.name)
    alias = ChampionAlias(registered, champion.version) if champion is not None else None
    return ModelPlan(
        status=status,
        submit=w.submit,
        cancel=w.cancel,
        serving=desired,
        events=w.events,
        champion_alias=alias,
        rollout_marks=rollout_marks(registered, w.runs),
        approval_marks=approval_marks,
    )
