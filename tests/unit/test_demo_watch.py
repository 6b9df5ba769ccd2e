"""From Model objects (as the API server returns them) and monitor metrics to the record."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from prometheus_client import generate_latest

from loopline.demo.record import DemoRecord
from loopline.demo.watch import StatusTracker, parse_drift_metrics
from loopline.monitoring.metrics import MonitorMetrics


def _model(status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "drill-ae", "generation": generation}, "status": status}


def _cond(type_: str, status: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": ""}


def test_the_story_becomes_markers_once_each() -> None:
    rec = DemoRecord()
    start = (rec.started_at + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    tracker = StatusTracker(rec)
    first_run = {
        "runId": "r1",
        "trigger": "manual",
        "generation": 1,
        "phase": "Running",
        "step": "train",
        "startedAt": start,
    }
    tracker.update(
        _model(
            {
                "phase": "Training",
                "currentRun": first_run,
                "conditions": [_cond("Training", "True", "RunStarted")],
            }
        )
    )
    assert rec.phase == "Training"
    assert rec.runs["r1"].step == "train"
    assert abs((rec.runs["r1"].started_t or 0) - 5.0) < 1e-6
    serving = {
        "phase": "Serving",
        "champion": {"version": "1"},
        "endpoints": {"rest": "http://127.0.0.1:1", "grpc": "127.0.0.1:2"},
        "runs": [{**first_run, "phase": "Succeeded", "modelVersion": "1", "gatePassed": True}],
        "conditions": [
            _cond("Training", "False", "RunSucceeded"),
            _cond("Ready", "True", "Serving"),
        ],
    }
    tracker.update(_model(serving))
    tracker.update(_model(serving))  # nothing changed: nothing new
    assert [m.kind for m in rec.markers] == ["serving"]
    assert rec.endpoints == {"REST": "http://127.0.0.1:1", "GRPC": "127.0.0.1:2"}
    assert rec.champion == "1"

    reason = json.dumps({"trigger": "drift", "features": ["feed_rate", "spindle_speed"]})
    request = {"requestId": "abc", "trigger": "drift", "reason": reason, "receivedAt": start}
    drift_run = {
        "runId": "r2",
        "trigger": "drift",
        "generation": 1,
        "phase": "Running",
        "requestId": "abc",
    }
    tracker.update(
        _model(
            {
                **serving,
                "retraining": request,
                "currentRun": drift_run,
                "drift": {"drifted": True, "pValues": {"feed_rate": 1e-9}},
            }
        )
    )
    tracker.update(
        _model(
            {
                **serving,
                "retraining": request,
                "phase": "Validating",
                "currentRun": {**drift_run, "step": "compare-with-champion"},
            }
        )
    )
    tracker.update(
        _model(
            {
                **serving,
                "retraining": request,
                "phase": "Validating",
                "currentRun": {**drift_run, "modelVersion": "2"},
            }
        )
    )
    tracker.update(
        _model(
            {
                **serving,
                "retraining": request,
                "phase": "Rolling out",
                "challenger": {"version": "2"},
                "currentRun": {**drift_run, "modelVersion": "2", "gatePassed": True},
            }
        )
    )
    assert rec.challenger == "2"
    tracker.update(
        _model(
            {
                **serving,
                "retraining": request,
                "champion": {"version": "2"},
                "runs": [
                    {**drift_run, "phase": "Succeeded", "modelVersion": "2", "gatePassed": True}
                ],
            }
        )
    )
    kinds = [m.kind for m in rec.markers]
    assert kinds == [
        "serving",
        "retrain-requested",
        "gate-started",
        "registered",
        "gate-passed",
        "promoted",
    ]
    assert rec.first_marker("retrain-requested").label == "drift: feed_rate, spindle_speed"  # type: ignore[union-attr]
    assert rec.champion == "2"
    assert rec.challenger == ""
    assert rec.drift[-1].p_values == {"feed_rate": 1e-9}
    assert [c.status for c in rec.transitions if c.type == "Phase"] == [
        "Training",
        "Serving",
        "Validating",
        "Rolling out",
        "Serving",
    ]


def test_status_p_values_are_ignored_once_the_monitor_is_known() -> None:
    rec = DemoRecord()
    tracker = StatusTracker(rec)
    drift = {"drifted": True, "pValues": {"feed_rate": 1e-9}}
    tracker.update(_model({"phase": "Serving", "drift": drift}))
    assert len(rec.drift) == 1
    endpoints = {"monitor": "http://127.0.0.1:9"}
    tracker.update(
        _model(
            {
                "phase": "Serving",
                "drift": {**drift, "pValues": {"feed_rate": 0.5}},
                "endpoints": endpoints,
            }
        )
    )
    assert rec.endpoints["Monitor"] == "http://127.0.0.1:9"
    assert len(rec.drift) == 1


def test_a_rejected_challenger_is_marked_as_such() -> None:
    rec = DemoRecord()
    tracker = StatusTracker(rec)
    run = {
        "runId": "r2",
        "trigger": "drift",
        "phase": "Succeeded",
        "modelVersion": "2",
        "gatePassed": False,
        "message": "f1 0.41 < champion 0.52 + 0.01",
    }
    tracker.update(_model({"phase": "Serving", "champion": {"version": "1"}, "runs": [run]}))
    assert [m.kind for m in rec.markers] == ["serving", "registered", "gate-rejected"]
    assert "0.41" in rec.markers[-1].label


def test_drift_metrics_are_read_from_the_monitors_exposition() -> None:
    metrics = MonitorMetrics()
    metrics.p_value.labels(model="drill-ae", feature="feed_rate").set(1e-7)
    metrics.p_value.labels(model="drill-ae", feature="spindle_current").set(0.4)
    metrics.p_value.labels(model="other", feature="feed_rate").set(0.9)
    metrics.detected.labels(model="drill-ae").set(1)
    text = generate_latest(metrics.registry).decode()
    p_values, detected = parse_drift_metrics(text, "drill-ae")
    assert p_values == {"feed_rate": 1e-7, "spindle_current": 0.4}
    assert detected is True
