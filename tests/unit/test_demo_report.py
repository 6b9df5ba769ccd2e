"""The demo's record, live view and report, on a record built here (no servers)."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from loopline.demo.live import LiveView, render, step_line
from loopline.demo.record import (
    AsyncSample,
    Comparison,
    DemoRecord,
    RequestSample,
    TracePoint,
    UsageEntry,
    VersionInfo,
)
from loopline.demo.report import RECORD_NAME, REPORT_NAME, write_report
from loopline.demo.traffic_stats import segment_stats
from loopline.types.history import OPERATOR, Decision, ServingState

CORE = ["spindle_vibration_rms", "spindle_current", "spindle_torque", "coolant_temperature"]


def _story() -> DemoRecord:
    """A small record shaped like a real run: baseline, recipe change, retraining, dead sensor."""
    rng = np.random.default_rng(0)
    rec = DemoRecord(model="drill-ae", namespace="demo", core_features=CORE)
    rec.set_phase("Training", t=0.0)
    rec.set_condition("Ready", "False", "Training", t=0.0)
    rec.upsert_run("run-1", trigger="manual", phase="Succeeded", started_t=0.0, ended_t=20.0)
    rec.set_phase("Serving", t=25.0)
    rec.set_condition("Ready", "True", "ChampionServing", "version 1 serves", t=25.0)
    rec.set_versions(champion="1")
    for i in range(600):
        t = 25.0 + i * 0.25
        segment = "baseline" if t < 60 else "recipe-change" if t < 140 else "dead-sensor"
        shift = 3.0 if segment != "baseline" else 0.0
        values: dict[str, float | None] = {name: float(rng.normal(10 + shift, 1)) for name in CORE}
        if segment == "dead-sensor":
            values["spindle_current"] = None  # shown as a gap in the plot
        score = float(abs(rng.normal(1 + shift, 0.3)))
        rec.add_trace(
            [
                TracePoint(
                    t=t,
                    machine_id="drill-01",
                    values=values,
                    score=score,
                    threshold=2.0,
                    is_anomaly=score > 2.0,
                    model="fallback" if segment == "dead-sensor" else "primary",
                    model_state="stale" if 65 <= t < 120 else "ok",
                )
            ]
        )
        rec.add_request(
            RequestSample(
                t=t,
                protocol="rest" if i % 2 else "grpc",
                latency_s=float(rng.uniform(0.001, 0.01)),
                rows=8,
                ok=i != 7,
                status="ok" if i != 7 else "503",
                segment=segment,
                fallback_rows=8 if segment == "dead-sensor" else 0,
                anomalies=int(score > 2.0),
                model_version="1" if t < 120 else "2",
                model_state="stale" if 65 <= t < 120 else "ok",
                stale_anomalies=int(score > 2.0) if 65 <= t < 120 else 0,
                alarm_starts=["drill-02"] if i in (10, 400) else [],
            )
        )
        if i % 20 == 0:
            p = 0.5 if segment == "baseline" else 1e-6
            rec.add_drift({"spindle_current": p, "feed_rate": 0.4}, drift=p < 0.01, t=t)
    rec.mark("recipe-change", "recipe B", t=60.0)
    rec.mark("retrain-requested", "drift", t=70.0)
    rec.upsert_run("run-2", trigger="drift", phase="Succeeded", started_t=71.0, ended_t=100.0)
    rec.mark("registered", "version 2", t=100.0)
    rec.mark("gate-passed", "beats champion", t=101.0)
    rec.set_phase("Rolling out", t=101.0)
    rec.mark("promoted", "version 2", t=120.0)
    rec.set_phase("Serving", t=120.0)
    rec.set_versions(champion="2")
    rec.mark("sensor-dead", "spindle_current", t=140.0)
    rec.add_comparison(
        Comparison(
            dataset="rows after the recipe change",
            rows=400,
            metrics={"1": {"f1": 0.41, "roc_auc": 0.7}, "2": {"f1": 0.83, "roc_auc": 0.95}},
        )
    )
    for v, aliases in (("1", []), ("2", ["champion"])):
        rec.upsert_version(
            VersionInfo(
                version=v,
                aliases=aliases,
                run_id=f"mlflow-{v}",
                metrics={"f1": 0.8},
                tags={"loopline.trigger": "manual" if v == "1" else "drift", "<b>": "x&y"},
            )
        )
    rec.step("Cluster up", detail="127.0.0.1:6443", command="kubectl get --raw /readyz", t=1.0)
    rec.step("Recipe changed", command="kubectl get models.loopline.dev drill-ae -w", t=60.0)
    rec.note("nothing missing")
    rec.set_history(
        "demo/drill-ae",
        [
            Decision(
                at=rec.started_at + timedelta(seconds=t),
                kind="Promoted",
                actor=OPERATOR,
                version=v,
                serving=ServingState(champion=v),
            )
            for t, v in ((25.0, "1"), (120.0, "2"))
        ],
    )
    for i in range(6):  # the historian's queued requests, one still waiting at the end
        queued = AsyncSample(t=30.0 + 20 * i, id=f"h-{i}", caller="historian", rows=8)
        rec.add_async(queued)
        if i < 5:
            rec.answer_async(
                queued, ok=True, status="ok", answered_t=31.0 + 20 * i, model_version="1"
            )
    rec.set_usage(
        [
            UsageEntry(
                version="1",
                caller="gateway-rest",
                requests=300,
                errors=0,
                rows=2400,
                fallback_rows=0,
                p50_s=0.002,
                p95_s=0.004,
                p99_s=0.006,
                retired=True,
            ),
            UsageEntry(
                version="1",
                caller="historian",
                requests=5,
                errors=0,
                rows=40,
                fallback_rows=0,
                p50_s=0.003,
                p95_s=0.005,
                p99_s=0.005,
                retired=True,
            ),
        ]
    )
    rec.ended_t = 175.0
    return rec


def test_stage_durations_come_from_markers() -> None:
    rec = _story()
    assert rec.stage_durations() == {
        "detection_s": 10.0,
        "training_s": 30.0,
        "gate_s": 1.0,
        "rollout_s": 19.0,
        "total_s": 60.0,
    }
    assert DemoRecord().stage_durations()["total_s"] is None


def test_conditions_record_transitions_only() -> None:
    rec = DemoRecord()
    assert rec.set_condition("Ready", "False", "Training", t=1.0)
    assert not rec.set_condition("Ready", "False", "Training", "new message", t=2.0)
    assert rec.conditions["Ready"].message == "new message"
    assert rec.set_condition("Ready", "True", "Serving", t=3.0)
    assert [c.t for c in rec.transitions] == [1.0, 3.0]


def test_drift_samples_are_deduplicated() -> None:
    rec = DemoRecord()
    rec.add_drift({"a": 0.5}, drift=False, t=1.0)
    rec.add_drift({"a": 0.5}, drift=False, t=2.0)
    rec.add_drift({"a": 0.001}, drift=True, t=3.0)
    assert [d.t for d in rec.drift] == [1.0, 3.0]


def test_traffic_stats_over_a_window() -> None:
    rec = _story()
    stats = rec.traffic_stats(window_s=10.0, now=50.0)  # requests at t in [40, 50]
    assert stats.requests == 41
    assert stats.rows == 8 * 41
    assert stats.request_rate == pytest.approx(4.1)
    assert stats.fallback_rate == 0.0
    seg = segment_stats(rec)
    assert set(seg) == {"baseline", "recipe-change", "dead-sensor"}
    assert seg["dead-sensor"].fallback_rate == 1.0
    assert seg["baseline"].errors == 1


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    rec = _story()
    loaded = DemoRecord.load(rec.save(tmp_path / "r.json"))
    assert loaded.model_dump() == rec.model_dump()


def test_live_view_renders_the_state() -> None:
    from rich.console import Console

    rec = _story()
    console = Console(file=io.StringIO(), width=140)
    console.print(render(rec.snapshot(), now=150.0))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Serving" in text
    assert "ChampionServing" in text
    assert "spindle_current" in text
    assert "DRIFT" in text
    assert "$ kubectl get models.loopline.dev drill-ae -w" in text


def test_plain_progress_prints_each_step_once() -> None:
    rec = DemoRecord()
    out = io.StringIO()
    with LiveView(rec, stream=out, live=False):
        rec.step("Applying the Model", command="kubectl apply -f m.yaml", t=2.0)
    assert out.getvalue().count("Applying the Model") == 1
    assert "$ kubectl apply -f m.yaml" in out.getvalue()
    assert step_line(rec.steps[0]).startswith("[    2.0s] Applying the Model")


def test_report_has_every_plot_and_escapes_text(tmp_path: Path) -> None:
    rec = _story()
    path = write_report(rec, tmp_path / "report")
    assert path.name == REPORT_NAME
    doc = path.read_text()
    for png in (
        "sensors.png",
        "alarms.png",
        "drift.png",
        "metrics.png",
        "latency.png",
        "conditions.png",
    ):
        assert (path.parent / png).stat().st_size > 5_000, png
        assert f"src='{png}'" in doc
    assert (path.parent / RECORD_NAME).exists()
    assert "&lt;b&gt;" in doc
    assert "x&amp;y" in doc
    assert "Not measured" not in doc
    # The stage table shows the measured 60 s loop.
    assert re.search(r"<td>total</td><td>60.0</td>", doc)
    assert "0.8300" in doc  # the challenger's F1 on post-change data


def test_report_says_what_was_not_measured(tmp_path: Path) -> None:
    rec = DemoRecord()
    rec.note("the operator is not in the tree yet")
    doc = write_report(rec, tmp_path).read_text()
    # six plots, the stale-model section, the usage table, the history
    assert doc.count("Not measured in this run") == 9
    assert "the operator is not in the tree yet" in doc
    assert not list(tmp_path.glob("*.png"))
