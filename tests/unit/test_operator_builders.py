"""The pure Model and Pipeline reconcilers: given observations, the right runs, phases, events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.operators.builders.model import (
    ChampionAlias,
    ModelObservation,
    ModelPlan,
    RolloutMark,
    mark_degraded,
    reconcile_model,
)
from loopline.operators.builders.pipeline import reconcile_pipeline
from loopline.operators.builders.runs import RunContext, merged_params, run_id
from loopline.operators.builders.serving import ServingObserved
from loopline.types.common import RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION, Trigger
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.runs import RunPhase, TrainingRunResult
from loopline.types.status import ModelStatus, PipelineStatus, RolloutOutcome

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CTX = RunContext(mlflow_tracking_uri="sqlite:///m.db", feature_repo="feature_repo")
PIPE = PipelineSpec.model_validate({"pipeline": "training", "parameters": {"epochs": 7}})


def _spec(**extra: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {"task": "anomaly-detection", "pipelineRef": {"name": "training"}, **extra}
    )


def _obs(
    status: ModelStatus | None = None,
    *,
    spec: ModelSpec | None = None,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    run: TrainingRunResult | None = None,
    serving: ServingObserved | None = None,
    pipeline: PipelineSpec | None = PIPE,
    now: datetime = T0,
) -> ModelObservation:
    return ModelObservation(
        namespace="plant",
        name="drill-ae",
        uid="uid-1",
        generation=generation,
        annotations=annotations or {},
        spec=spec or _spec(),
        status=status or ModelStatus(),
        pipeline=pipeline,
        pipeline_message="Pipeline training not found",
        run=run,
        serving=serving,
        now=now,
    )


def _result(plan: ModelPlan, phase: RunPhase, **extra: Any) -> TrainingRunResult:
    assert plan.status.current_run is not None
    return TrainingRunResult(runId=plan.status.current_run.run_id, phase=phase, **extra)


def _reasons(plan: ModelPlan) -> list[str]:
    return [e.reason for e in plan.events]


def _cond(plan: ModelPlan, type_: str) -> str:
    return next(c.status.value for c in plan.status.conditions if c.type == type_)


def _to_serving(status: ModelStatus) -> ModelPlan:
    """Drive a fresh Model through a successful first run until it serves."""
    plan = reconcile_model(_obs(status), CTX)
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="1", promoted=True)
    plan = reconcile_model(_obs(plan.status, run=done), CTX)
    up = ServingObserved(ready=True, champion_version="1", endpoints={"rest": "http://x"})
    return reconcile_model(_obs(plan.status, serving=up), CTX)


def _to_canary(spec: ModelSpec, notes: dict[str, str]) -> ModelPlan:
    """Version 1 serving; the retraining request in `notes` registers version 2, which
    starts its canary at the first of `spec`'s steps."""
    base = _to_serving(ModelStatus())
    plan = reconcile_model(_obs(base.status, spec=spec, annotations=notes), CTX)
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="2", promoted=True)
    return reconcile_model(_obs(plan.status, spec=spec, annotations=notes, run=done), CTX)


def test_new_model_starts_one_run_with_merged_parameters() -> None:
    plan = reconcile_model(_obs(spec=_spec(training={"batchSize": 64})), CTX)
    assert plan.submit is not None
    assert plan.submit.trigger == Trigger.SPEC_CHANGE
    assert plan.submit.params.epochs == 7
    assert plan.submit.params.batch_size == 64
    assert plan.status.phase == "Training"
    assert _cond(plan, "Training") == "True"
    assert _cond(plan, "Ready") == "False"
    assert "TrainingStarted" in _reasons(plan)
    assert "Training" in _reasons(plan)
    assert all(c.observed_generation == 1 for c in plan.status.conditions)


def test_same_inputs_give_the_same_run_id_after_a_restart() -> None:
    """A restarted operator that lost the status patch computes the run id again."""
    first = reconcile_model(_obs(), CTX)
    again = reconcile_model(_obs(), CTX)
    assert first.submit is not None
    assert again.submit is not None
    assert first.submit.run_id == again.submit.run_id
    # With the status recorded, nothing new is submitted while the run is in flight.
    running = _result(first, RunPhase.RUNNING, step="train-model")
    later = reconcile_model(_obs(first.status, run=running), CTX)
    assert later.submit is None
    assert later.status.phase == "Training"


def test_spec_change_starts_a_new_run_but_serving_change_does_not() -> None:
    plan = _to_serving(ModelStatus())
    assert plan.status.phase == "Serving"
    scaled = reconcile_model(
        _obs(plan.status, spec=_spec(serving={"replicas": 2}), generation=2), CTX
    )
    assert scaled.submit is None
    retrain = reconcile_model(
        _obs(plan.status, spec=_spec(training={"epochs": 3}), generation=2), CTX
    )
    assert retrain.submit is not None
    assert retrain.submit.params.epochs == 3
    assert retrain.submit.run_id != plan.status.runs[0].run_id


def test_validating_step_then_first_version_rolls_out_and_serves() -> None:
    plan = reconcile_model(_obs(), CTX)
    plan = reconcile_model(
        _obs(plan.status, run=_result(plan, RunPhase.RUNNING, step="evaluate-model")), CTX
    )
    assert plan.status.phase == "Validating"
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="1", promoted=True, metrics={"f1": 0.9})
    plan = reconcile_model(_obs(plan.status, run=done), CTX)
    assert plan.status.phase == "Rolling out"
    assert plan.serving is not None
    assert plan.serving.champion_version == "1"
    assert plan.serving.canary_version is None  # the first version takes all traffic
    up = ServingObserved(ready=True, champion_version="1", endpoints={"rest": "http://x:1"})
    plan = reconcile_model(_obs(plan.status, serving=up), CTX)
    assert plan.status.phase == "Serving"
    assert plan.status.champion is not None
    assert plan.status.champion.version == "1"
    assert plan.status.champion.metrics == {"f1": 0.9}
    assert plan.status.endpoints is not None
    assert plan.status.endpoints.rest == "http://x:1"
    assert _cond(plan, "Ready") == "True"
    assert _cond(plan, "Serving") == "True"
    assert "Promoted" in _reasons(plan)


def test_retrain_request_twice_with_same_id_starts_one_run() -> None:
    serving = _to_serving(ModelStatus())
    reason = json.dumps(
        {"trigger": "drift", "features": ["spindle_current"], "pValues": {"spindle_current": 0.001}}
    )
    notes = {RETRAIN_ANNOTATION: "req-1", RETRAIN_REASON_ANNOTATION: reason}
    spec = _spec(monitoring={"retrainOnDrift": True})
    first = reconcile_model(_obs(serving.status, spec=spec, annotations=notes), CTX)
    assert first.submit is not None
    assert first.submit.trigger == Trigger.DRIFT
    assert first.status.retraining is not None
    assert first.status.retraining.run_id == first.submit.run_id
    assert first.status.drift is not None
    assert first.status.drift.features == ["spindle_current"]
    assert _cond(first, "Drifted") == "True"
    running = _result(first, RunPhase.RUNNING, step="train-model")
    second = reconcile_model(_obs(first.status, spec=spec, annotations=notes, run=running), CTX)
    assert second.submit is None
    # A backend that lost the run is asked again under the same id, never a new one.
    lost = reconcile_model(_obs(first.status, spec=spec, annotations=notes), CTX)
    assert lost.submit is not None
    assert lost.submit.run_id == first.submit.run_id
    assert "RetrainRequested" not in _reasons(second)


def test_drift_run_carries_when_the_drift_began_and_the_models_row_minimum() -> None:
    """The run trains from the monitor's driftStart (see components.steps.drift_window); a
    backend that lost the run gets the same start again; a reason without one (an older
    monitor) or with nonsense trains on the whole window, as before."""
    serving = _to_serving(ModelStatus())
    began = "2026-01-01T09:30:00+00:00"
    reason = json.dumps({"trigger": "drift", "features": ["feed_rate"], "driftStart": began})
    notes = {RETRAIN_ANNOTATION: "req-2", RETRAIN_REASON_ANNOTATION: reason}
    spec = _spec(monitoring={"retrainOnDrift": True, "driftWindowMinRows": 500})
    plan = reconcile_model(_obs(serving.status, spec=spec, annotations=notes), CTX)
    assert plan.submit is not None
    assert plan.submit.drift_start == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    assert plan.submit.drift_min_rows == 500
    assert json.loads(plan.submit.model_dump_json(by_alias=True))["driftStart"] == (
        "2026-01-01T09:30:00Z"
    )
    lost = reconcile_model(_obs(plan.status, spec=spec, annotations=notes), CTX)
    assert lost.submit is not None
    assert lost.submit.run_id == plan.submit.run_id
    assert lost.submit.drift_start == plan.submit.drift_start
    for i, bad in enumerate(['{"trigger": "drift"}', '{"trigger": "drift", "driftStart": 5}']):
        notes = {RETRAIN_ANNOTATION: f"req-x{i}", RETRAIN_REASON_ANNOTATION: bad}
        other = reconcile_model(_obs(serving.status, spec=spec, annotations=notes), CTX)
        assert other.submit is not None
        assert other.submit.drift_start is None
    naive = json.dumps({"trigger": "drift", "driftStart": "2026-01-01T09:30:00"})
    notes = {RETRAIN_ANNOTATION: "req-n", RETRAIN_REASON_ANNOTATION: naive}
    taken = reconcile_model(_obs(serving.status, spec=spec, annotations=notes), CTX)
    assert taken.submit is not None
    assert taken.submit.drift_start == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    # Only drift runs narrow their window: a spec change trains on the whole of it.
    changed = reconcile_model(
        _obs(serving.status, spec=_spec(training={"epochs": 2}), generation=2), CTX
    )
    assert changed.submit is not None
    assert changed.submit.trigger == Trigger.SPEC_CHANGE
    assert changed.submit.drift_start is None


def test_drift_request_is_recorded_but_ignored_when_retrain_on_drift_is_off() -> None:
    serving = _to_serving(ModelStatus())
    notes = {RETRAIN_ANNOTATION: "req-9", RETRAIN_REASON_ANNOTATION: '{"trigger": "drift"}'}
    plan = reconcile_model(_obs(serving.status, annotations=notes), CTX)
    assert plan.submit is None
    assert "RetrainIgnored" in _reasons(plan)
    assert plan.status.retraining is not None
    assert plan.status.retraining.request_id == "req-9"


def test_manual_request_waits_for_the_run_in_flight_under_forbid() -> None:
    plan = reconcile_model(_obs(), CTX)
    notes = {RETRAIN_ANNOTATION: "1700000000"}
    running = _result(plan, RunPhase.RUNNING, step="train-model")
    waiting = reconcile_model(_obs(plan.status, annotations=notes, run=running), CTX)
    assert waiting.submit is None
    assert waiting.status.pending_request is not None
    done = _result(waiting, RunPhase.SUCCEEDED, modelVersion="1", promoted=True)
    after = reconcile_model(_obs(waiting.status, annotations=notes, run=done), CTX)
    assert after.submit is not None
    assert after.submit.trigger == Trigger.MANUAL
    assert after.status.pending_request is None


def test_replace_policy_cancels_the_run_in_flight() -> None:
    pipe = PIPE.model_copy(update={"concurrency_policy": "Replace"})
    plan = reconcile_model(_obs(pipeline=pipe), CTX)
    running = _result(plan, RunPhase.RUNNING)
    notes = {RETRAIN_ANNOTATION: "now"}
    replaced = reconcile_model(
        _obs(plan.status, annotations=notes, run=running, pipeline=pipe), CTX
    )
    assert replaced.cancel == running.run_id
    assert replaced.submit is not None
    assert replaced.submit.run_id != running.run_id
    assert replaced.status.runs[0].phase == "Cancelled"


def test_failed_first_run_fails_the_model_without_retrying() -> None:
    plan = reconcile_model(_obs(), CTX)
    failed = _result(plan, RunPhase.FAILED, step="validate-data", message="completeness 0.5 < 0.95")
    plan = reconcile_model(_obs(plan.status, run=failed), CTX)
    assert plan.status.phase == "Failed"
    assert "completeness" in plan.status.message
    assert "TrainingFailed" in _reasons(plan)
    again = reconcile_model(_obs(plan.status), CTX)
    assert again.submit is None
    assert again.status.phase == "Failed"
    assert not again.events  # no new Events for an unchanged situation


def test_rejected_challenger_keeps_the_champion_serving() -> None:
    serving = _to_serving(ModelStatus())
    plan = reconcile_model(_obs(serving.status, annotations={RETRAIN_ANNOTATION: "r"}), CTX)
    rejected = _result(
        plan,
        RunPhase.SUCCEEDED,
        modelVersion="2",
        promoted=False,
        rejectionReason="f1 0.7 < champion 0.9",
    )
    up = ServingObserved(ready=True, champion_version="1")
    plan = reconcile_model(
        _obs(plan.status, annotations={RETRAIN_ANNOTATION: "r"}, run=rejected, serving=up), CTX
    )
    assert plan.status.phase == "Serving"
    assert "ChallengerRejected" in _reasons(plan)
    assert plan.status.champion is not None
    assert plan.status.champion.version == "1"


def test_canary_walks_its_steps_then_promotes_or_aborts() -> None:
    spec = _spec(serving={"canary": {"steps": [20, 100], "stepSeconds": 30}})
    notes = {RETRAIN_ANNOTATION: "r2"}
    plan = _to_canary(spec, notes)
    assert plan.status.rollout is not None
    assert plan.status.rollout.weight == 20
    assert plan.serving is not None
    assert plan.serving.canary_version == "2"
    assert plan.serving.champion_version == "1"
    assert plan.serving.canary_weight == 20
    # The registry's champion stays with what serves all traffic while the canary walks.
    assert plan.champion_alias == ChampionAlias("plant.drill-ae", "1")
    canary = ServingObserved(ready=True, champion_version="1", canary_version="2", canary_weight=20)
    early = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, serving=canary), CTX)
    assert early.status.rollout == plan.status.rollout  # holds for stepSeconds
    later = T0 + timedelta(seconds=31)
    step = reconcile_model(
        _obs(plan.status, spec=spec, annotations=notes, serving=canary, now=later), CTX
    )
    assert step.status.rollout is not None
    assert step.status.rollout.weight == 100
    full = ServingObserved(ready=True, champion_version="1", canary_version="2", canary_weight=100)
    final = reconcile_model(
        _obs(
            step.status,
            spec=spec,
            annotations=notes,
            serving=full,
            now=later + timedelta(seconds=31),
        ),
        CTX,
    )
    assert final.status.champion is not None
    assert final.status.champion.version == "2"
    assert final.status.rollout is None
    assert "Promoted" in _reasons(final)
    assert final.champion_alias == ChampionAlias("plant.drill-ae", "2")
    promoted = final.status.runs[0].rollout_result
    assert promoted is not None
    assert (promoted.outcome, promoted.weight) == (RolloutOutcome.PROMOTED, 100)
    assert promoted.finished_at == later + timedelta(seconds=31)
    assert RolloutMark("plant.drill-ae", "2", RolloutOutcome.PROMOTED, promoted.message) in (
        final.rollout_marks
    )
    bad = ServingObserved(
        ready=True,
        champion_version="1",
        canary_version="2",
        canary_weight=20,
        canary_healthy=False,
        canary_reason="error_rate 0.2 > 0.05",
    )
    aborted = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, serving=bad), CTX)
    assert aborted.status.rollout is None
    assert "CanaryAborted" in _reasons(aborted)
    assert aborted.status.champion is not None
    assert aborted.status.champion.version == "1"
    assert aborted.champion_alias == ChampionAlias("plant.drill-ae", "1")
    # How it ended stays in status (and goes to the registry) after the Event has expired.
    rolled_back = aborted.status.runs[0].rollout_result
    assert rolled_back is not None
    assert aborted.status.runs[0].model_version == "2"
    assert (rolled_back.outcome, rolled_back.weight) == (RolloutOutcome.ROLLED_BACK, 20)
    assert rolled_back.message == "error_rate 0.2 > 0.05"
    assert (
        RolloutMark("plant.drill-ae", "2", RolloutOutcome.ROLLED_BACK, "error_rate 0.2 > 0.05")
        in aborted.rollout_marks
    )
    # The first version's result is kept too: each version's mark comes from its own run.
    assert [m.version for m in aborted.rollout_marks] == ["2", "1"]
    up = ServingObserved(ready=True, champion_version="1")
    after = reconcile_model(_obs(aborted.status, spec=spec, annotations=notes, serving=up), CTX)
    assert after.status.phase == "Serving"
    assert after.status.message == (
        "version 1 serving; version 2 rolled back at 20%: error_rate 0.2 > 0.05"
    )
    assert after.status.runs[0].rollout_result == rolled_back  # recorded once, kept


def test_missing_pipeline_waits_in_pending() -> None:
    plan = reconcile_model(_obs(pipeline=None), CTX)
    assert plan.submit is None
    assert plan.status.phase == "Pending"
    assert "not found" in plan.status.message


def test_degraded_marks_condition_and_phase() -> None:
    status = mark_degraded(ModelStatus(), 3, "PipelineBackendUnavailable", "disk gone", T0)
    assert status.phase == "Degraded"
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.status == "True"
    assert degraded.observed_generation == 3
    # The next successful reconcile clears it.
    plan = reconcile_model(_obs(status), CTX)
    assert _cond(plan, "Degraded") == "False"


def test_run_ids_are_dns_labels_and_differ_per_cause() -> None:
    a = run_id("u", 1, Trigger.MANUAL, "r1", "Drill_AE" * 10)
    b = run_id("u", 1, Trigger.MANUAL, "r2", "Drill_AE" * 10)
    assert a != b
    assert len(a) <= 63
    assert a == a.lower()
    assert "_" not in a


def test_merged_params_only_override_what_the_model_sets() -> None:
    params = merged_params(PIPE, _spec(training={"latentDim": 3}))
    assert (params.epochs, params.latent_dim) == (7, 3)


def test_pipeline_schedule_requests_once_per_tick_and_lists_runs() -> None:
    pipe = PipelineSpec.model_validate({"pipeline": "training", "schedule": "*/15 * * * *"})
    model_status = _to_serving(ModelStatus()).status
    now = T0 + timedelta(minutes=16)
    plan = reconcile_pipeline(pipe, PipelineStatus(), 1, T0, {"drill-ae": model_status}, now)
    assert [(r.model, r.request_id) for r in plan.requests] == [
        ("drill-ae", "schedule-20260101T1215Z")
    ]
    assert plan.status.recent_runs[0].model == "drill-ae"
    assert plan.status.next_schedule_time == T0 + timedelta(minutes=30)
    again = reconcile_pipeline(pipe, plan.status, 1, T0, {"drill-ae": model_status}, now)
    assert again.requests == []


def test_invalid_schedule_is_reported() -> None:
    # The types refuse this schedule now (admission); a Pipeline stored before that rule
    # existed still reaches the operator, which reports it instead of failing.
    pipe = PipelineSpec.model_construct(pipeline="training", schedule="61 * * * *")
    plan = reconcile_pipeline(pipe, PipelineStatus(), 1, T0, {}, T0)
    assert "minute" in plan.error
    assert plan.status.conditions[0].reason == "ScheduleInvalid"


def test_scaled_to_zero_promotes_without_serving() -> None:
    spec = _spec(serving={"replicas": 0})
    plan = reconcile_model(_obs(spec=spec), CTX)
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="1", promoted=True)
    plan = reconcile_model(_obs(plan.status, spec=spec, run=done), CTX)
    assert plan.serving is None
    assert plan.status.phase == "Serving"
    assert _cond(plan, "Ready") == "True"
    assert _cond(plan, "Serving") == "False"
    notes = {RETRAIN_ANNOTATION: "again"}
    plan = reconcile_model(_obs(plan.status, spec=spec, annotations=notes), CTX)
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="2", promoted=True)
    plan = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, run=done), CTX)
    assert plan.status.champion is not None
    assert plan.status.champion.version == "2"
    assert plan.status.rollout is None
    assert plan.champion_alias == ChampionAlias("plant.drill-ae", "2")
    result = plan.status.runs[0].rollout_result
    assert result is not None
    assert result.outcome == RolloutOutcome.PROMOTED
    assert "replicas is 0" in result.message


def test_runs_the_operator_starts_leave_the_champion_alias_to_it() -> None:
    first = reconcile_model(_obs(), CTX)
    assert first.submit is not None
    assert first.submit.move_champion is False
    assert first.champion_alias is None  # nothing to point at before a version is promoted


def test_canary_with_traffic_is_judged_by_the_serving_decision() -> None:
    """With per-version traffic stats, decide_canary (loopline.operators.builders.canary) decides."""
    from loopline.operators.builders.canary import VersionStats

    spec = _spec(serving={"canary": {"steps": [20, 100], "stepSeconds": 0}})
    notes = {RETRAIN_ANNOTATION: "r3"}
    plan = _to_canary(spec, notes)
    quiet = ServingObserved(
        ready=True,
        champion_version="1",
        canary_version="2",
        canary_weight=20,
        champion_stats=VersionStats(requests=100),
        canary_stats=VersionStats(requests=3),
    )
    held = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, serving=quiet), CTX)
    assert held.status.rollout == plan.status.rollout  # too few canary requests to judge
    failing = ServingObserved(
        ready=True,
        champion_version="1",
        canary_version="2",
        canary_weight=20,
        champion_stats=VersionStats(requests=100),
        canary_stats=VersionStats(requests=50, server_errors=10),
    )
    aborted = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, serving=failing), CTX)
    assert aborted.status.rollout is None
    assert any("error_rate" in e.message for e in aborted.events if e.reason == "CanaryAborted")
    healthy = ServingObserved(
        ready=True,
        champion_version="1",
        canary_version="2",
        canary_weight=20,
        champion_stats=VersionStats(requests=100),
        canary_stats=VersionStats(requests=50),
    )
    stepped = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, serving=healthy), CTX)
    assert stepped.status.rollout is not None
    assert stepped.status.rollout.weight == 100


def test_monitor_only_for_a_served_champion_with_monitoring_on() -> None:
    from loopline.operators.builders.monitoring import build_monitor

    spec = _spec(monitoring={"windowSize": 200, "retrainOnDrift": True})
    assert build_monitor("plant", "drill-ae", spec, None) is None
    desired = build_monitor("plant", "drill-ae", spec, "3")
    assert desired is not None
    assert (desired.window_size, desired.retrain_on_drift) == (200, True)
    assert build_monitor("plant", "drill-ae", _spec(monitoring={"enabled": False}), "3") is None
    assert build_monitor("plant", "drill-ae", _spec(serving={"replicas": 0}), "3") is None


def test_monitor_checks_are_recorded_and_drift_follows_the_monitors_hysteresis() -> None:
    """One window is noise either way: Drifted turns on when the monitor confirmed a drift
    (K drifted windows in a row), stays on through single stable windows, and turns off once
    K windows in a row tested stable."""
    from loopline.operators.builders.monitoring import DriftCheck

    def observe(plan: ModelPlan, minutes: int, **check: Any) -> ModelPlan:
        at = T0 + timedelta(minutes=minutes)
        seen = DriftCheck(last_check=at, **check)
        return reconcile_model(
            ModelObservation(**{**_obs(plan.status).__dict__, "drift_check": seen}), CTX
        )

    plan = _to_serving(ModelStatus())
    plan = observe(plan, 0, p_values={"spindle_current": 0.4})
    assert plan.status.drift is not None
    assert plan.status.drift.last_check == T0
    assert _cond(plan, "Drifted") == "False"
    plan = observe(plan, 5, features=["coolant_temperature"])  # one drifted window: suspect
    assert _cond(plan, "Drifted") == "False"
    assert plan.status.drift is not None
    assert plan.status.drift.features == ["coolant_temperature"]
    plan = observe(plan, 10, features=["coolant_temperature"], confirmed=True)
    assert _cond(plan, "Drifted") == "True"
    assert plan.submit is None  # reporting drift is not a retraining request
    plan = observe(plan, 15)  # one stable window does not end it
    assert _cond(plan, "Drifted") == "True"
    stale = reconcile_model(  # an older report changes nothing
        ModelObservation(
            **{**_obs(plan.status).__dict__, "drift_check": DriftCheck(T0, settled=True)}
        ),
        CTX,
    )
    assert _cond(stale, "Drifted") == "True"
    plan = observe(plan, 20, settled=True)
    assert _cond(plan, "Drifted") == "False"
    assert plan.status.drift is not None
    assert plan.status.drift.last_check == T0 + timedelta(minutes=20)


def test_a_canary_replaced_by_a_newer_version_is_recorded_as_superseded() -> None:
    spec = _spec(serving={"canary": {"steps": [20, 100], "stepSeconds": 30}})
    notes = {RETRAIN_ANNOTATION: "r2"}
    plan = _to_canary(spec, notes)
    assert plan.status.rollout is not None
    notes = {RETRAIN_ANNOTATION: "r3"}
    plan = reconcile_model(_obs(plan.status, spec=spec, annotations=notes), CTX)
    assert plan.submit is not None  # a new request starts a run while version 2 is a canary
    done = _result(plan, RunPhase.SUCCEEDED, modelVersion="3", promoted=True)
    plan = reconcile_model(_obs(plan.status, spec=spec, annotations=notes, run=done), CTX)
    assert plan.status.rollout is not None
    assert plan.status.rollout.version == "3"
    v2 = next(r for r in plan.status.runs if r.model_version == "2")
    assert v2.rollout_result is not None
    assert v2.rollout_result.outcome == RolloutOutcome.SUPERSEDED
    assert v2.rollout_result.message == "replaced by version 3 before its canary finished"
    assert plan.status.runs[0].rollout_result is None  # version 3's canary has just begun
    assert [(m.version, m.outcome) for m in plan.rollout_marks] == [
        ("2", RolloutOutcome.SUPERSEDED),
        ("1", RolloutOutcome.PROMOTED),
    ]


def test_the_primary_endpoint_follows_spec_serving_protocol() -> None:
    from loopline.operators.builders.model import endpoints_of
    from loopline.types.model import Protocol

    observed = {"rest": "http://127.0.0.1:1", "grpc": "grpc://127.0.0.1:2", "metrics": "m"}
    rest = endpoints_of(observed, Protocol.REST)
    grpc = endpoints_of(observed, Protocol.GRPC)
    assert (rest.primary, grpc.primary) == ("http://127.0.0.1:1", "grpc://127.0.0.1:2")
    assert rest.rest == grpc.rest == "http://127.0.0.1:1"
    assert rest.grpc == grpc.grpc == "grpc://127.0.0.1:2"
