"""The Model reconciler as a pure function: what was observed -> what to do and what to report.

`reconcile_model` folds the pipeline backend's view of the current run and the serving
backend's view of the deployment into the Model's status, decides whether a run must start
(a training-relevant spec change, or a retraining request annotated on the Model), walks a
canary through its steps, and derives the phase, conditions and Events. It never reads a clock
or a server, so a restarted operator given the same inputs makes the same decision, and the run
id it asks for is the one the backend already knows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopline.operators.builders.conditions import set_condition
from loopline.operators.builders.monitoring import DriftCheck
from loopline.operators.builders.runs import (
    RunContext,
    build_run_spec,
    run_id,
    training_hash,
)
from loopline.operators.builders.serving import (
    UNHEALTHY,
    ServingDesired,
    ServingObserved,
    build_serving,
)
from loopline.serving.canary import CanaryAction, decide_canary
from loopline.types.common import (
    RETRAIN_ANNOTATION,
    RETRAIN_REASON_ANNOTATION,
    Trigger,
    registered_model_name,
)
from loopline.types.model import ModelSpec
from loopline.types.pipeline import ConcurrencyPolicy, PipelineSpec
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from loopline.types.status import (
    ConditionStatus,
    ConditionType,
    DriftStatus,
    Endpoints,
    ModelPhase,
    ModelStatus,
    RetrainingStatus,
    RolloutOutcome,
    RolloutResult,
    RolloutStatus,
    RunRecord,
    VersionRef,
)

TERMINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})
# Steps after training (names of loopline.components.steps; short forms for other pipelines):
# while one runs, the Model is Validating the new version rather than Training it.
VALIDATING_STEPS = frozenset(
    {
        "evaluate-model",
        "compare-with-champion",
        "register-model",
        "evaluate",
        "compare",
        "register",
    }
)
RUN_HISTORY = 10


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ModelObservation:
    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: ModelSpec
    status: ModelStatus
    pipeline: PipelineSpec | None
    pipeline_message: str  # why `pipeline` is None
    run: TrainingRunResult | None  # the backend's view of status.currentRun
    serving: ServingObserved | None
    now: datetime
    drift_check: DriftCheck | None = None  # what the drift monitor last reported


@dataclass(frozen=True)
class ChampionAlias:
    """Where the registry's `champion` alias should point: the version serving all traffic.

    The operator owns the alias of the Models it rolls out (their runs leave it alone,
    `TrainingRunSpec.move_champion`), so the monitor's reference and the next gate's
    comparison follow what serves, and a canary rolled back never becomes champion."""

    registered_model: str
    version: str


@dataclass(frozen=True)
class RolloutMark:
    """How a version's rollout ended, for its registry tags (`loopline.rollout.*`): without
    it a version rolled back after passing the gate reads `gate.decision: promoted` in MLflow
    and nothing says it never served."""

    registered_model: str
    version: str
    outcome: RolloutOutcome
    message: str


@dataclass
class ModelPlan:
    status: ModelStatus
    submit: TrainingRunSpec | None = None
    cancel: str | None = None
    serving: ServingDesired | None = None
    events: list[Event] = field(default_factory=list)
    champion_alias: ChampionAlias | None = None
    rollout_marks: list[RolloutMark] = field(default_factory=list)


def parse_retrain_request(annotations: Mapping[str, str], now: datetime) -> RetrainingStatus | None:
    """The retraining request annotated on the Model, or None when there is none."""
    request_id = annotations.get(RETRAIN_ANNOTATION, "").strip()
    if not request_id:
        return None
    raw = annotations.get(RETRAIN_REASON_ANNOTATION, "")
    trigger = Trigger.MANUAL
    try:
        reason: Any = json.loads(raw) if raw else {}
        trigger = Trigger(reason.get("trigger", "manual")) if isinstance(reason, dict) else trigger
    except (ValueError, TypeError):
        pass  # an unreadable reason is kept verbatim; the request still counts (manual)
    return RetrainingStatus(request_id=request_id, trigger=trigger, reason=raw, received_at=now)


def drift_start_of(request: RetrainingStatus | None) -> datetime | None:
    """When the drift behind a drift request began (its reason's `driftStart`), if it says.

    A reason without it (an older monitor, a hand-written request) or with an unreadable one
    gives None: the run then trains on the whole training window, as before."""
    if request is None or request.trigger != Trigger.DRIFT or not request.reason:
        return None
    try:
        reason = json.loads(request.reason)
        start = datetime.fromisoformat(reason["driftStart"])
    except (ValueError, TypeError, KeyError):
        return None
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)


def _drift_from_reason(raw: str, now: datetime) -> DriftStatus:
    try:
        reason = json.loads(raw)
    except ValueError:
        reason = {}
    if not isinstance(reason, dict):
        reason = {}
    p_values = reason.get("pValues") or {}
    window_end = reason.get("windowEnd")
    try:
        last_check = datetime.fromisoformat(window_end) if window_end else now
    except (TypeError, ValueError):
        last_check = now
    return DriftStatus(
        drifted=True,
        last_check=last_check,
        features=[str(f) for f in reason.get("features") or []],
        p_values={str(k): float(v) for k, v in p_values.items() if isinstance(v, int | float)},
    )


def _fold_result(record: RunRecord, result: TrainingRunResult) -> RunRecord:
    return record.model_copy(
        update={
            "phase": result.phase,
            "step": result.step,
            "message": result.message or result.rejection_reason or "",
            "mlflow_run_id": result.mlflow_run_id,
            "model_version": result.model_version,
            "promoted": result.promoted if result.phase == RunPhase.SUCCEEDED else None,
            "started_at": result.started_at or record.started_at,
            "finished_at": result.finished_at,
        }
    )


def end_rollout(
    runs: list[RunRecord],
    rollout: RolloutStatus,
    outcome: RolloutOutcome,
    message: str,
    now: datetime,
) -> list[RunRecord]:
    """`runs` with the result recorded on the newest run that registered the version (none
    when that run has left the history)."""
    result = RolloutResult(outcome=outcome, weight=rollout.weight, message=message, finished_at=now)
    for i, run in enumerate(runs):
        if run.model_version == rollout.version:
            return [*runs[:i], run.model_copy(update={"rollout_result": result}), *runs[i + 1 :]]
    return runs


def rollout_marks(registered_model: str, runs: list[RunRecord]) -> list[RolloutMark]:
    return [
        RolloutMark(
            registered_model,
            run.model_version,
            run.rollout_result.outcome,
            run.rollout_result.message,
        )
        for run in runs
        if run.model_version and run.rollout_result is not None
    ]


def reconcile_model(obs: ModelObservation, context: RunContext) -> ModelPlan:
    st = obs.status
    spec = obs.spec
    events: list[Event] = []
    submit: TrainingRunSpec | None = None
    cancel: str | None = None
    current = st.current_run
    runs = list(st.runs)
    champion = st.champion
    challenger = st.challenger
    rollout = st.rollout
    drift = st.drift
    retraining = st.retraining
    pending = st.pending_request
    thash = st.training_hash
    failure = ""

    # 1. The current run, as the backend sees it.
    if current is not None and obs.run is not None:
        current = _fold_result(current, obs.run)
        if current.phase in TERMINAL:
            runs = [current, *runs][:RUN_HISTORY]
            version = current.model_version
            if current.phase == RunPhase.SUCCEEDED and current.promoted and version:
                challenger = VersionRef(
                    version=version, run_id=current.run_id, metrics=obs.run.metrics
                )
                if rollout is not None and rollout.version != version:
                    runs = end_rollout(
                        runs,
                        rollout,
                        RolloutOutcome.SUPERSEDED,
                        f"replaced by version {version} before its canary finished",
                        obs.now,
                    )
                first_weight = spec.serving.canary.steps[0] if champion else 100
                rollout = RolloutStatus(
                    version=version, step_index=0, weight=first_weight, step_started_at=obs.now
                )
                events.append(
                    Event(
                        "Normal",
                        "TrainingSucceeded",
                        f"run {current.run_id} registered version {version}; rolling out",
                    )
                )
            elif current.phase == RunPhase.SUCCEEDED:
                why = obs.run.rejection_reason or obs.run.message or "it did not beat the champion"
                events.append(
                    Event(
                        "Warning",
                        "ChallengerRejected",
                        f"run {current.run_id}: version {version or '-'} not promoted: {why}",
                    )
                )
            elif current.phase == RunPhase.FAILED:
                events.append(
                    Event(
                        "Warning",
                        "TrainingFailed",
                        f"run {current.run_id} failed at step {current.step or '-'}: "
                        f"{current.message or 'no message'}",
                    )
                )
            else:
                events.append(Event("Normal", "RunCancelled", f"run {current.run_id} cancelled"))
            current = None

    # 2. A new retraining request (annotation), recorded once per request id.
    request = parse_retrain_request(obs.annotations, obs.now)
    known = {r.request_id for r in (retraining, pending) if r is not None}
    if request is not None and request.request_id not in known:
        if request.trigger == Trigger.DRIFT:
            drift = _drift_from_reason(request.reason, obs.now)
        detail = f" (features: {', '.join(drift.features)})" if drift and drift.features else ""
        events.append(
            Event(
                "Normal",
                "RetrainRequested",
                f"request {request.request_id} ({request.trigger.value}){detail}",
            )
        )
        if request.trigger == Trigger.DRIFT and not spec.monitoring.retrain_on_drift:
            retraining = request
            events.append(
                Event(
                    "Warning",
                    "RetrainIgnored",
                    f"request {request.request_id}: drift retraining is off "
                    "(spec.monitoring.retrainOnDrift: false)",
                )
            )
        else:
            pending = request

    # The monitor's latest test: record when it ran and what it saw. Drifted follows the
    # monitor's hysteresis, not single windows: it turns on when K windows in a row drifted
    # (also when the monitor is not asked to request retraining) and off when K in a row
    # tested stable, or when a new champion is promoted (below).
    check = obs.drift_check
    newer = check is not None and (
        drift is None or drift.last_check is None or check.last_check > drift.last_check
    )
    if newer and check is not None:
        was = drift is not None and drift.drifted
        drift = DriftStatus(
            drifted=check.confirmed or (was and not check.settled),
            last_check=check.last_check,
            features=check.features or (drift.features if drift else []),
            p_values=check.p_values,
        )

    # 3. Start a run when a cause is waiting and nothing blocks it.
    pipeline = obs.pipeline
    if pipeline is not None:
        new_hash = training_hash(pipeline, spec)
        cause: tuple[Trigger, str] | None = None
        if pending is not None:
            cause = (pending.trigger, pending.request_id)
        elif thash != new_hash:
            cause = (Trigger.SPEC_CHANGE, new_hash)
        replace = pipeline.concurrency_policy == ConcurrencyPolicy.REPLACE
        if cause is not None and current is not None and replace:
            cancel = current.run_id
            cancelled = current.model_copy(
                update={"phase": RunPhase.CANCELLED, "finished_at": obs.now}
            )
            runs = [cancelled, *runs][:RUN_HISTORY]
            events.append(
                Event("Normal", "RunReplaced", f"run {current.run_id} replaced by a new one")
            )
            current = None
        if cause is not None and current is None:
            trigger, key = cause
            rid = run_id(obs.uid, obs.generation, trigger, key, obs.name)
            submit = build_run_spec(
                run_id_=rid,
                namespace=obs.namespace,
                name=obs.name,
                trigger=trigger,
                model=spec,
                pipeline=pipeline,
                context=context,
                parent_version=champion.version if champion else None,
                drift_start=drift_start_of(pending),
            )
            current = RunRecord(
                run_id=rid,
                trigger=trigger,
                generation=obs.generation,
                request_id=pending.request_id if pending else None,
                phase=RunPhase.PENDING,
                started_at=obs.now,
            )
            if pending is not None:
                retraining = pending.model_copy(update={"run_id": rid})
                pending = None
            thash = new_hash
            events.append(
                Event("Normal", "TrainingStarted", f"run {rid} started ({trigger.value})")
            )
        if submit is None and current is not None and obs.run is None:
            # The backend does not know a run we recorded (its state was lost): ask again
            # under the same id, so it is still one run for this cause.
            submit = build_run_spec(
                run_id_=current.run_id,
                namespace=obs.namespace,
                name=obs.name,
                trigger=current.trigger,
                model=spec,
                pipeline=pipeline,
                context=context,
                parent_version=champion.version if champion else None,
                drift_start=drift_start_of(
                    retraining
                    if retraining is not None and retraining.run_id == current.run_id
                    else None
                ),
            )

    # 4. Canary rollout. With replicas 0 nothing serves: a new version becomes champion at once.
    scaled_to_zero = spec.serving.replicas == 0
    serving = None if scaled_to_zero else obs.serving
    if rollout is not None:
        steps = spec.serving.canary.steps
        serving_it = scaled_to_zero or (
            serving is not None
            and serving.ready
            and (
                (champion is None and serving.champion_version == rollout.version)
                or (serving.canary_version == rollout.version)
                or (serving.champion_version == rollout.version)
            )
        )
        held = (
            obs.now - rollout.step_started_at
        ).total_seconds() >= spec.serving.canary.step_seconds
        champion_stats = serving.champion_stats if serving is not None else None
        canary_stats = serving.canary_stats if serving is not None else None
        if (
            champion is not None
            and serving_it
            and champion_stats is not None
            and canary_stats is not None
        ):
            decision = decide_canary(
                spec.serving.canary,
                step_index=min(rollout.step_index, len(steps) - 1),
                step_elapsed_s=(obs.now - rollout.step_started_at).total_seconds(),
                champion=champion_stats,
                canary=canary_stats,
            )
            action = decision.action
            reason = decision.reason
        elif champion is not None and serving is not None and serving.canary_healthy is False:
            action, reason = CanaryAction.ROLLBACK, serving.canary_reason
        elif serving_it and (champion is None or held or scaled_to_zero):
            last_step = champion is None or scaled_to_zero or rollout.step_index + 1 >= len(steps)
            action = CanaryAction.PROMOTE if last_step else CanaryAction.STEP
            if scaled_to_zero:
                reason = "spec.serving.replicas is 0: promoted without a canary"
            elif champion is None:
                reason = "first version: no champion to run a canary against"
            else:
                reason = f"step {rollout.weight}% held {spec.serving.canary.step_seconds} s"
        else:
            action, reason = CanaryAction.HOLD, ""
        if action == CanaryAction.ROLLBACK:
            why = reason or spec.serving.canary.abort_metric.value
            events.append(
                Event(
                    "Warning",
                    "CanaryAborted",
                    f"version {rollout.version} aborted at {rollout.weight}%: {why}",
                )
            )
            runs = end_rollout(runs, rollout, RolloutOutcome.ROLLED_BACK, why, obs.now)
            rollout = None
        elif action == CanaryAction.STEP:
            idx = rollout.step_index + 1
            rollout = RolloutStatus(
                version=rollout.version,
                step_index=idx,
                weight=steps[idx],
                step_started_at=obs.now,
            )
            events.append(
                Event(
                    "Normal", "CanaryStep", f"version {rollout.version} at {steps[idx]}%: {reason}"
                )
            )
        elif action == CanaryAction.PROMOTE:
            metrics = challenger.metrics if challenger else {}
            champion = VersionRef(
                version=rollout.version,
                run_id=challenger.run_id if challenger else None,
                metrics=metrics,
            )
            challenger = None
            events.append(Event("Normal", "Promoted", f"version {rollout.version} is champion"))
            runs = end_rollout(runs, rollout, RolloutOutcome.PROMOTED, reason, obs.now)
            if drift is not None and drift.drifted:
                drift = drift.model_copy(update={"drifted": False})
            rollout = None

    desired = build_serving(
        obs.namespace,
        obs.name,
        spec,
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
        endpoints = Endpoints(
            **{k: v for k, v in serving.endpoints.items() if k in ("rest", "grpc")}
        )

    # 5. Phase, conditions, events.
    last = runs[0] if runs else None
    if current is None and rollout is None and champion is None and last is not None:
        if last.phase == RunPhase.FAILED:
            failure = f"training run {last.run_id} failed: {last.message or 'see its log'}"
        elif last.phase == RunPhase.SUCCEEDED and not last.promoted:
            failure = f"no version passed validation (run {last.run_id}): {last.message}"

    gen = obs.generation
    conditions = list(st.conditions)
    if current is not None:
        validating = (current.step or "") in VALIDATING_STEPS
        phase = ModelPhase.VALIDATING if validating else ModelPhase.TRAINING
        message = (
            f"run {current.run_id} ({current.trigger.value}) at step {current.step or 'start'}"
        )
        conditions = set_condition(
            conditions,
            ConditionType.TRAINING,
            True,
            "Validating" if validating else "Running",
            message,
            gen,
            obs.now,
        )
    else:
        reason, message = "NoRun", "no training run yet"
        if last is not None:
            reason = {
                RunPhase.SUCCEEDED: "Succeeded" if last.promoted else "Rejected",
                RunPhase.FAILED: "Failed",
                RunPhase.CANCELLED: "Cancelled",
            }.get(last.phase, "NoRun")
            message = f"run {last.run_id}: {last.message or last.phase.value}"
        conditions = set_condition(
            conditions, ConditionType.TRAINING, False, reason, message, gen, obs.now
        )
        if pipeline is None:
            phase, message = ModelPhase.PENDING, obs.pipeline_message
        elif rollout is not None:
            phase = ModelPhase.ROLLING_OUT
            message = f"version {rollout.version} at {rollout.weight}%"
        elif failure:
            phase, message = ModelPhase.FAILED, failure
        elif champion is not None and scaled_to_zero:
            phase = ModelPhase.SERVING
            message = f"version {champion.version} is champion (scaled to zero)"
        elif champion is not None and unhealthy:
            assert serving is not None
            phase = ModelPhase.DEGRADED
            message = f"version {champion.version} is not serving: {serving.message}"
        elif champion is not None:
            phase = ModelPhase.SERVING if serving_ready else ModelPhase.ROLLING_OUT
            message = (
                f"version {champion.version} serving"
                if serving_ready
                else f"deploying version {champion.version}: {serving.message if serving else ''}"
            )
            ended = last.rollout_result if last is not None else None
            if (
                last is not None
                and ended is not None
                and ended.outcome == RolloutOutcome.ROLLED_BACK
            ):
                # Until the next run: why the newest version is not the one serving.
                message += (
                    f"; version {last.model_version} rolled back at {ended.weight}%: "
                    f"{ended.message}"
                )
        else:
            phase, message = ModelPhase.PENDING, "waiting for a training run"
    if pipeline is None and current is not None:
        message = f"{message}; {obs.pipeline_message}"
    if unhealthy and serving is not None and phase != ModelPhase.DEGRADED:
        message = f"{message}; version {champion.version if champion else '-'} is not serving: "
        message += serving.message

    conditions = set_condition(
        conditions,
        ConditionType.SERVING,
        serving_ready,
        "Deployed"
        if serving_ready
        else (serving.reason if unhealthy and serving else "NotDeployed"),
        (
            f"version {champion.version} at {(endpoints.rest if endpoints else '') or '-'}"
            if serving_ready and champion
            else (serving.message if serving and serving.message else "no version deployed")
        ),
        gen,
        obs.now,
    )
    if scaled_to_zero and champion is not None:
        conditions = set_condition(
            conditions,
            ConditionType.SERVING,
            False,
            "ScaledToZero",
            f"version {champion.version} is champion; spec.serving.replicas is 0",
            gen,
            obs.now,
        )
    ready = (
        serving_ready or (scaled_to_zero and champion is not None)
    ) and phase != ModelPhase.FAILED
    not_ready_reason = serving.reason if unhealthy and serving else phase.value.replace(" ", "")
    conditions = set_condition(
        conditions,
        ConditionType.READY,
        ready,
        "Serving" if ready else not_ready_reason,
        message,
        gen,
        obs.now,
    )
    drifted = drift is not None and drift.drifted
    conditions = set_condition(
        conditions,
        ConditionType.DRIFTED,
        ConditionStatus.TRUE if drifted else ConditionStatus.FALSE,
        "DriftDetected" if drifted else "NoDrift",
        f"drift in {', '.join(drift.features) or 'live data'}" if drift and drifted else "",
        gen,
        obs.now,
    )
    if unhealthy and serving is not None:
        conditions = set_condition(
            conditions, ConditionType.DEGRADED, True, serving.reason, message, gen, obs.now
        )
    else:
        conditions = set_condition(
            conditions, ConditionType.DEGRADED, False, "AsExpected", "", gen, obs.now
        )

    if phase != st.phase:
        events.append(
            Event(
                "Warning" if phase in (ModelPhase.FAILED, ModelPhase.DEGRADED) else "Normal",
                phase.value.replace(" ", ""),
                f"{st.phase.value} -> {phase.value}: {message}",
            )
        )

    status = ModelStatus(
        phase=phase,
        message=message,
        observed_generation=gen,
        conditions=conditions,
        current_run=current,
        runs=runs,
        champion=champion,
        challenger=challenger,
        rollout=rollout,
        endpoints=endpoints,
        drift=drift,
        retraining=retraining,
        training_hash=thash,
        pending_request=pending,
        history=st.history,
    )
    registered = registered_model_name(obs.namespace, obs.name)
    alias = ChampionAlias(registered, champion.version) if champion is not None else None
    return ModelPlan(
        status=status,
        submit=submit,
        cancel=cancel,
        serving=desired,
        events=events,
        champion_alias=alias,
        rollout_marks=rollout_marks(registered, runs),
    )


def mark_degraded(
    status: ModelStatus, generation: int, reason: str, message: str, now: datetime
) -> ModelStatus:
    """The status with Degraded=True and the reason: a backend is failing temporarily."""
    conditions = set_condition(
        list(status.conditions), ConditionType.DEGRADED, True, reason, message, generation, now
    )
    conditions = set_condition(
        conditions, ConditionType.READY, False, reason, message, generation, now
    )
    return status.model_copy(
        update={
            "phase": ModelPhase.DEGRADED,
            "message": message,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )


def mark_failed(
    status: ModelStatus, generation: int, reason: str, message: str, now: datetime
) -> ModelStatus:
    """The status with phase Failed: the spec cannot work as written; the message says why."""
    conditions = set_condition(
        list(status.conditions), ConditionType.READY, False, reason, message, generation, now
    )
    return status.model_copy(
        update={
            "phase": ModelPhase.FAILED,
            "message": message,
            "conditions": conditions,
            "observed_generation": generation,
        }
    )
