"""Decision logic: K consecutive windows, one request, cooldown, re-arm (pure functions)."""

from __future__ import annotations

import json

import pytest

from loopline.monitoring.decision import (
    CONFIRMED,
    Decision,
    DecisionState,
    Policy,
    decide,
    delivered,
    rearm,
)
from loopline.monitoring.detectors import DriftResult, FeatureTest
from loopline.monitoring.retrain import build_retrain_patch
from loopline.types.common import RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION


def result(drifted: dict[str, bool]) -> DriftResult:
    features = [
        FeatureTest(
            name=n,
            p_value=1e-9 if d else 0.5,
            statistic=0.6 if d else 0.01,
            rows=100,
            missing=0,
            tested=True,
            drifted=d,
        )
        for n, d in drifted.items()
    ]
    return DriftResult(
        detector="ks",
        is_drift=any(drifted.values()),
        p_value=min(f.p_value for f in features),
        threshold=0.01,
        statistic=max(f.statistic for f in features),
        rows=100,
        features=features,
    )


DRIFT = result({"feed_rate": True, "spindle_speed": True, "spindle_current": False})
STABLE = result({"feed_rate": False, "spindle_speed": False, "spindle_current": False})


def run(state: DecisionState, results: list[DriftResult], policy: Policy, t0: float = 1000.0):
    requests = []
    for i, r in enumerate(results):
        state, req = decide(state, r, policy=policy, now=t0 + i, model="drill-ae", namespace="ns")
        if req is not None:
            requests.append(req)
    return state, requests


def test_k_consecutive_windows_then_exactly_one_request_naming_features() -> None:
    policy = Policy(consecutive_windows=3, cooldown_seconds=100)
    state, reqs = run(DecisionState(reference_version="4"), [DRIFT, DRIFT], policy)
    assert reqs == []
    assert state.decision == Decision.SUSPECT
    assert state.consecutive == 2
    state, reqs = run(state, [DRIFT] + [DRIFT] * 20, policy)
    assert len(reqs) == 1
    req = reqs[0]
    assert req.features == ["feed_rate", "spindle_speed"]
    assert set(req.p_values) == {"feed_rate", "spindle_speed"}
    assert req.request_id == "drift-drill-ae-v4-w3"
    assert state.requests == 1
    assert state.decision == Decision.COOLDOWN


def test_stable_window_resets_the_count() -> None:
    policy = Policy(consecutive_windows=3)
    state, reqs = run(DecisionState(), [DRIFT, DRIFT, STABLE, DRIFT, DRIFT, STABLE] * 5, policy)
    assert reqs == []
    assert state.windows_tested == 30
    assert state.drifted_windows == 20


def test_stable_windows_in_a_row_are_counted_for_the_end_of_a_drift() -> None:
    """The Model's Drifted condition turns off after K stable windows in a row (the same
    hysteresis as turning on); one drifted window starts that count over."""
    policy = Policy(consecutive_windows=2)
    state, _ = run(DecisionState(), [DRIFT, DRIFT], policy)
    assert state.decision in CONFIRMED
    assert state.stable_consecutive == 0
    state, _ = run(state, [STABLE], policy)
    assert (state.decision, state.stable_consecutive) == (Decision.STABLE, 1)
    assert state.decision not in CONFIRMED
    state, _ = run(state, [DRIFT], policy)
    assert (state.decision, state.stable_consecutive) == (Decision.SUSPECT, 0)
    state, _ = run(state, [STABLE, STABLE, STABLE], policy)
    assert state.stable_consecutive == 3
    # A state saved before this field existed reads as no stable streak.
    old = {k: v for k, v in state.to_dict().items() if k != "stable_consecutive"}
    assert DecisionState.from_dict(old).stable_consecutive == 0


def test_drift_stays_confirmed_while_it_persists_after_a_request() -> None:
    """Servers label a model `stale` while the drift is confirmed: the windows right after a
    request must not read as merely suspect while the drift goes on."""
    policy = Policy(consecutive_windows=3, cooldown_seconds=1000)
    state, reqs = run(DecisionState(reference_version="1"), [DRIFT] * 3, policy)
    assert len(reqs) == 1
    assert state.decision in CONFIRMED
    for _ in range(5):
        state, reqs = run(state, [DRIFT], policy)
        assert reqs == []
        assert state.decision == Decision.COOLDOWN
    state, _ = run(state, [STABLE], policy)
    assert state.decision not in CONFIRMED


def test_after_cooldown_persistent_drift_asks_again_once() -> None:
    policy = Policy(consecutive_windows=2, cooldown_seconds=10)
    # One window per second for 25 s of persistent drift: requests at ~t=1, ~t=12, ~t=23.
    state, reqs = run(DecisionState(), [DRIFT] * 25, policy)
    assert len(reqs) == 3
    assert state.cooldown_until > 1000 + 24


def test_report_only_never_requests() -> None:
    state, reqs = run(DecisionState(), [DRIFT] * 10, Policy(retrain_on_drift=False))
    assert reqs == []
    assert state.decision == Decision.REPORTED


def test_rearm_on_new_reference_restarts_the_count_but_not_the_cooldown() -> None:
    """A new champion does not buy a new request before the cooldown ends: a retraining storm
    is what the cooldown is there to stop."""
    policy = Policy(consecutive_windows=2, cooldown_seconds=1000)
    state, reqs = run(DecisionState(reference_version="1"), [DRIFT] * 5, policy)
    assert len(reqs) == 1
    cooldown = state.cooldown_until
    state = rearm(state, "2")
    assert state.cooldown_until == cooldown
    assert state.consecutive == 0
    assert state.decision == "rearmed"
    state, reqs = run(state, [DRIFT] * 3, policy, t0=1100)  # drift against v2, in cooldown
    assert reqs == []
    assert state.decision == "cooldown"
    state, reqs = run(state, [DRIFT] * 2, policy, t0=cooldown + 1)
    assert [r.request_id for r in reqs] == ["drift-drill-ae-v2-w9"]  # the first one after it


def test_pending_until_delivered_and_state_round_trips() -> None:
    state, reqs = run(DecisionState(), [DRIFT], Policy(consecutive_windows=1))
    assert state.pending_request is not None
    again = DecisionState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert delivered(state, "other").pending_request is not None
    assert delivered(state, reqs[0].request_id).pending_request is None


def test_retrain_patch_is_the_annotation_contract() -> None:
    _, reqs = run(DecisionState(), [DRIFT], Policy(consecutive_windows=1))
    patch = build_retrain_patch(reqs[0])
    ann = patch["metadata"]["annotations"]
    assert ann[RETRAIN_ANNOTATION] == reqs[0].request_id
    reason = json.loads(ann[RETRAIN_REASON_ANNOTATION])
    assert reason["trigger"] == "drift"
    assert reason["features"] == ["feed_rate", "spindle_speed"]
    assert set(reason["pValues"]) == {"feed_rate", "spindle_speed"}
    assert reason["windowEnd"].endswith("+00:00")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="consecutive_windows"):
        Policy(consecutive_windows=0)


def test_a_request_says_when_the_drift_began_and_keeps_it_while_drift_persists() -> None:
    """driftStart: after a stable window, the time that window was tested (the rows since then
    tipped the next one); without one, the drifted window's oldest row. A later request of the
    same streak (after the cooldown, the first run's challenger rejected) keeps the start, so
    it trains on more of the new operating point, not less."""
    policy = Policy(consecutive_windows=3, cooldown_seconds=10)

    def step(state: DecisionState, r: DriftResult, now: float, start: float | None = None):
        return decide(
            state, r, policy=policy, now=now, model="m", namespace="ns", window_start=start
        )

    state, _ = step(DecisionState(), STABLE, 100.0, 40.0)
    assert state.drift_start == ""
    starts = iter([70.0, 85.0, 99.0, 110.0, 115.0, 120.0])
    requests = []
    for now in (110.0, 120.0, 130.0, 135.0, 145.0, 150.0):
        state, req = step(state, DRIFT, now, next(starts))
        requests.append(req)
    first, again = requests[2], requests[4]
    assert first is not None
    assert again is not None
    # the streak outlives the request: the first window after the cooldown asks again
    assert [r is not None for r in requests] == [False, False, True, False, True, False]
    began = "1970-01-01T00:01:40+00:00"  # t=100: the last stable window's test
    assert first.drift_start == again.drift_start == began
    assert json.loads(first.reason_json())["driftStart"] == began
    # A stable window ends the streak; a new reference starts the story over.
    state, _ = step(state, STABLE, 160.0)
    assert state.drift_start == ""
    state, _ = step(state, DRIFT, 170.0)  # no arrival times (restored rows): the stable test
    assert state.drift_start == "1970-01-01T00:02:40+00:00"
    assert rearm(state, "7").drift_start == ""
    # With no stable window against this reference, the drifted window's oldest row.
    fresh, _ = step(rearm(state, "7"), DRIFT, 200.0, 150.0)
    assert fresh.drift_start == "1970-01-01T00:02:30+00:00"
    assert step(DecisionState(), DRIFT, 200.0)[0].drift_start == "1970-01-01T00:03:20+00:00"


def test_a_request_without_a_known_start_leaves_drift_start_out_of_the_reason() -> None:
    from loopline.monitoring.decision import RetrainRequest

    request = RetrainRequest(
        request_id="r",
        model="m",
        namespace="ns",
        features=["a"],
        p_values={"a": 0.0},
        window_end="2026-01-01T00:00:00+00:00",
    )
    assert request.reason().drift_start is None
    assert "driftStart" not in request.reason_json()
    # A pending request persisted by an older monitor (no drift_start) still loads.
    assert (
        RetrainRequest.from_dict(
            {k: v for k, v in request.__dict__.items() if k != "drift_start"}
        ).drift_start
        == ""
    )


def test_the_reason_annotation_reads_back_as_the_operator_sees_it() -> None:
    """The monitor writes the reason with the same model the operator reads it with."""
    from datetime import UTC, datetime

    from loopline.monitoring.decision import RetrainRequest
    from loopline.operators.builders.model import drift_start_of, parse_retrain_request
    from loopline.types.common import RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION, Trigger
    from loopline.types.monitor import RetrainReason

    request = RetrainRequest(
        request_id="req-7",
        model="m",
        namespace="ns",
        features=["spindle_current"],
        p_values={"spindle_current": 1e-6},
        window_end="2026-01-02T00:00:00+00:00",
        drift_start="2026-01-01T12:00:00+00:00",
    )
    annotations = {RETRAIN_ANNOTATION: "req-7", RETRAIN_REASON_ANNOTATION: request.reason_json()}
    status = parse_retrain_request(annotations, datetime(2026, 1, 2, tzinfo=UTC))
    assert status is not None
    assert status.trigger == Trigger.DRIFT
    assert drift_start_of(status) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert RetrainReason.parse(status.reason) == request.reason()
    # Hand-written or unreadable reasons: the request still counts, as a manual one.
    for raw in ("", "not json", "[1, 2]", '{"trigger": "nonsense"}'):
        manual = parse_retrain_request(
            {RETRAIN_ANNOTATION: "x", RETRAIN_REASON_ANNOTATION: raw}, datetime.now(UTC)
        )
        assert manual is not None
        assert manual.trigger == Trigger.MANUAL, raw
        assert drift_start_of(manual) is None
