"""The canary rollout's step in a reconcile: what the rollout does next, and the status it
leaves (a step, a rollback with its reason, or a promotion that makes a new champion)."""

from __future__ import annotations

from loopline.operators.builders.canary import CanaryAction, decide_canary
from loopline.operators.builders.model_plan import (
    ModelObservation,
    Work,
    end_rollout,
)
from loopline.operators.builders.serving import ServingObserved
from loopline.types.status import (
    RolloutOutcome,
    RolloutStatus,
    VersionRef,
)


def canary_action(
    w: Work, obs: ModelObservation, rollout: RolloutStatus, serving: ServingObserved | None
) -> tuple[CanaryAction, str]:
    """What the rollout does next: judged on the versions' traffic when the backend reads
    it, on the backend's own verdict when it gives one, else on time held at each step."""
    spec = obs.spec
    steps = spec.serving.canary.steps
    scaled_to_zero = spec.serving.replicas == 0
    champion = w.champion
    serving_it = scaled_to_zero or (
        serving is not None
        and serving.ready
        and (
            (champion is None and serving.champion_version == rollout.version)
            or (serving.canary_version == rollout.version)
            or (serving.champion_version == rollout.version)
        )
    )
    elapsed = (obs.now - rollout.step_started_at).total_seconds()
    held = elapsed >= spec.serving.canary.step_seconds
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
            step_elapsed_s=elapsed,
            champion=champion_stats,
            canary=canary_stats,
        )
        return decision.action, decision.reason
    if champion is not None and serving is not None and serving.canary_healthy is False:
        return CanaryAction.ROLLBACK, serving.canary_reason
    if serving_it and (champion is None or held or scaled_to_zero):
        last_step = champion is None or scaled_to_zero or rollout.step_index + 1 >= len(steps)
        action = CanaryAction.PROMOTE if last_step else CanaryAction.STEP
        if scaled_to_zero:
            return action, "spec.serving.replicas is 0: promoted without a canary"
        if champion is None:
            return action, "first version: no champion to run a canary against"
        return action, f"step {rollout.weight}% held {spec.serving.canary.step_seconds} s"
    return CanaryAction.HOLD, ""


def advance_rollout(w: Work, obs: ModelObservation, serving: ServingObserved | None) -> None:
    """4. Canary rollout. With replicas 0 nothing serves: a new version becomes champion at
    once."""
    rollout = w.rollout
    if rollout is None:
        return
    steps = obs.spec.serving.canary.steps
    action, reason = canary_action(w, obs, rollout, serving)
    if action == CanaryAction.ROLLBACK:
        why = reason or obs.spec.serving.canary.abort_metric.value
        w.event(
            "Warning",
            "CanaryAborted",
            f"version {rollout.version} aborted at {rollout.weight}%: {why}",
        )
        w.runs = end_rollout(w.runs, rollout, RolloutOutcome.ROLLED_BACK, why, obs.now)
        w.rollout = None
    elif action == CanaryAction.STEP:
        idx = rollout.step_index + 1
        w.rollout = RolloutStatus(
            version=rollout.version, step_index=idx, weight=steps[idx], step_started_at=obs.now
        )
        w.event("Normal", "CanaryStep", f"version {rollout.version} at {steps[idx]}%: {reason}")
    elif action == CanaryAction.PROMOTE:
        challenger = w.challenger
        w.champion = VersionRef(
            version=rollout.version,
            run_id=challenger.run_id if challenger else None,
            metrics=challenger.metrics if challenger else {},
        )
        w.challenger = None
        w.event("Normal", "Promoted", f"version {rollout.version} is champion")
        w.runs = end_rollout(w.runs, rollout, RolloutOutcome.PROMOTED, reason, obs.now)
        if w.drift is not None and w.drift.drifted:
            w.drift = w.drift.model_copy(update={"drifted": False})
        w.rollout = None
