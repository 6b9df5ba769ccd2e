"""The Model's phase, message and conditions at the end of a reconcile, from the working
state the phases left: what `kubectl get models` and `kubectl describe` show."""

from __future__ import annotations

from loopline.operators.builders.approval import awaiting_message
from loopline.operators.builders.conditions import set_condition
from loopline.operators.builders.model_plan import (
    VALIDATING_STEPS,
    ModelObservation,
    Work,
)
from loopline.operators.builders.serving import ServingObserved
from loopline.types.approval import ApprovalState
from loopline.types.runs import RunPhase
from loopline.types.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    Endpoints,
    ModelPhase,
    RolloutOutcome,
)


def phase_of(
    w: Work,
    obs: ModelObservation,
    serving: ServingObserved | None,
    serving_ready: bool,
    unwell: ServingObserved | None = None,
) -> tuple[ModelPhase, str]:
    """5. Where the Model is, and the one-line message that says why. `unwell` is the
    serving observation when the deployed champion stopped serving (Degraded, with why)."""
    phase, message = _phase(w, obs, serving, serving_ready, unwell)
    if unwell is not None and phase != ModelPhase.DEGRADED:
        champion = w.champion.version if w.champion else "-"
        message = f"{message}; version {champion} is not serving: {unwell.message}"
    return phase, message


def _phase(
    w: Work,
    obs: ModelObservation,
    serving: ServingObserved | None,
    serving_ready: bool,
    unwell: ServingObserved | None,
) -> tuple[ModelPhase, str]:
    current, champion, rollout = w.current, w.champion, w.rollout
    last = w.runs[0] if w.runs else None
    if current is not None:
        validating = (current.step or "") in VALIDATING_STEPS
        phase = ModelPhase.VALIDATING if validating else ModelPhase.TRAINING
        message = (
            f"run {current.run_id} ({current.trigger.value}) at step {current.step or 'start'}"
        )
        if obs.pipeline is None:
            message = f"{message}; {obs.pipeline_message}"
        return phase, message
    if obs.pipeline is None:
        return ModelPhase.PENDING, obs.pipeline_message
    pending = w.approval if w.approval and w.approval.state == ApprovalState.PENDING else None
    if rollout is not None:
        message = f"version {rollout.version} at {rollout.weight}%"
        if pending is not None:
            message += f"; version {pending.version} awaits approval"
        return ModelPhase.ROLLING_OUT, message
    if pending is not None:
        return ModelPhase.AWAITING_APPROVAL, awaiting_message(obs, pending)
    if champion is None and last is not None:
        if last.phase == RunPhase.FAILED:
            return ModelPhase.FAILED, (
                f"training run {last.run_id} failed: {last.message or 'see its log'}"
            )
        if last.phase == RunPhase.SUCCEEDED and not last.gate_passed:
            return ModelPhase.FAILED, (
                f"no version passed validation (run {last.run_id}): {last.message}"
            )
    if champion is None:
        refused = last.rollout_result if last is not None else None
        if last is not None and refused is not None:
            return ModelPhase.PENDING, (
                f"no champion: version {last.model_version} not promoted: {refused.message}"
            )
        return ModelPhase.PENDING, "waiting for a training run"
    if unwell is not None and obs.spec.serving.replicas != 0:
        return ModelPhase.DEGRADED, f"version {champion.version} is not serving: {unwell.message}"
    if obs.spec.serving.replicas == 0:
        phase, message = (
            ModelPhase.SERVING,
            f"version {champion.version} is champion (scaled to zero)",
        )
    elif serving_ready:
        phase, message = ModelPhase.SERVING, f"version {champion.version} serving"
    else:
        detail = serving.message if serving else ""
        phase, message = ModelPhase.ROLLING_OUT, f"deploying version {champion.version}: {detail}"
    ended = last.rollout_result if last is not None else None
    if last is not None and ended is not None and ended.outcome == RolloutOutcome.ROLLED_BACK:
        # Until the next run: why the newest version is not the one serving.
        message += f"; version {last.model_version} rolled back at {ended.weight}%: {ended.message}"
    elif last is not None and ended is not None and ended.outcome == RolloutOutcome.REJECTED:
        message += f"; version {last.model_version} not promoted: {ended.message}"
    return phase, message


def conditions_of(
    w: Work,
    obs: ModelObservation,
    phase: ModelPhase,
    message: str,
    serving: ServingObserved | None,
    serving_ready: bool,
    endpoints: Endpoints | None,
    unwell: ServingObserved | None = None,
) -> list[Condition]:
    """Training, Serving, Ready, Drifted and Degraded, each with its reason and message."""
    gen, now, champion, current = obs.generation, obs.now, w.champion, w.current
    conditions = list(obs.status.conditions)
    if current is not None:
        validating = phase == ModelPhase.VALIDATING
        conditions = set_condition(
            conditions,
            ConditionType.TRAINING,
            True,
            "Validating" if validating else "Running",
            f"run {current.run_id} ({current.trigger.value}) at step {current.step or 'start'}",
            gen,
            now,
        )
    else:
        last = w.runs[0] if w.runs else None
        reason, text = "NoRun", "no training run yet"
        if last is not None:
            reason = {
                RunPhase.SUCCEEDED: "Succeeded" if last.gate_passed else "Rejected",
                RunPhase.FAILED: "Failed",
                RunPhase.CANCELLED: "Cancelled",
            }.get(last.phase, "NoRun")
            text = f"run {last.run_id}: {last.message or last.phase.value}"
        conditions = set_condition(
            conditions, ConditionType.TRAINING, False, reason, text, gen, now
        )
    conditions = set_condition(
        conditions,
        ConditionType.SERVING,
        serving_ready,
        "Deployed" if serving_ready else (unwell.reason if unwell else "NotDeployed"),
        (
            f"version {champion.version} at {(endpoints.rest if endpoints else '') or '-'}"
            if serving_ready and champion
            else (serving.message if serving and serving.message else "no version deployed")
        ),
        gen,
        now,
    )
    scaled_to_zero = obs.spec.serving.replicas == 0
    if scaled_to_zero and champion is not None:
        conditions = set_condition(
            conditions,
            ConditionType.SERVING,
            False,
            "ScaledToZero",
            f"version {champion.version} is champion; spec.serving.replicas is 0",
            gen,
            now,
        )
    ready = (
        serving_ready or (scaled_to_zero and champion is not None)
    ) and phase != ModelPhase.FAILED
    conditions = set_condition(
        conditions,
        ConditionType.READY,
        ready,
        "Serving" if ready else (unwell.reason if unwell else phase.value.replace(" ", "")),
        message,
        gen,
        now,
    )
    drift = w.drift
    drifted = drift is not None and drift.drifted
    conditions = set_condition(
        conditions,
        ConditionType.DRIFTED,
        ConditionStatus.TRUE if drifted else ConditionStatus.FALSE,
        "DriftDetected" if drifted else "NoDrift",
        f"drift in {', '.join(drift.features) or 'live data'}" if drift and drifted else "",
        gen,
        now,
    )
    if unwell is not None:
        return set_condition(
            conditions, ConditionType.DEGRADED, True, unwell.reason, message, gen, now
        )
    return set_condition(conditions, ConditionType.DEGRADED, False, "AsExpected", "", gen, now)
