"""The scenario's pure parts: settings, example manifests as the demo applies them, waiting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loopline.demo.scenario import (
    MissingPiece,
    demo_model,
    demo_pipeline,
    load_examples,
)
from loopline.demo.settings import DemoSettings

MODEL: dict[str, Any] = {
    "apiVersion": "loopline.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "drill-ae", "namespace": "default", "labels": {"a": "b"}},
    "spec": {
        "task": "anomaly-detection",
        "pipelineRef": {"name": "sensor-training"},
        "monitoring": {"windowSize": 500},
    },
}
PIPELINE: dict[str, Any] = {
    "apiVersion": "loopline.dev/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "sensor-training"},
    "spec": {"pipeline": "training"},
}


def test_quick_shrinks_only_what_was_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_DEMO_RATE", "33")
    quick = DemoSettings().quick()
    assert quick.rate == 33.0
    assert quick.machines == 6
    assert quick.epochs == 3
    assert DemoSettings(machines=6).quick().machines == 6
    with pytest.raises(ValueError, match="extra"):
        DemoSettings(nonsense=1)  # type: ignore[call-arg]


def test_state_and_report_dirs_default_under_the_state_dir(tmp_path: Path) -> None:
    s = DemoSettings(state_dir=tmp_path / "s")
    assert s.resolved_state_dir() == tmp_path / "s"
    assert s.resolved_report_dir() == tmp_path / "s" / "report"


def test_examples_are_found_and_adapted(tmp_path: Path) -> None:
    (tmp_path / "anomaly.yaml").write_text(yaml.safe_dump_all([PIPELINE, MODEL]))
    (tmp_path / "other.yaml").write_text(
        yaml.safe_dump({"kind": "Model", "metadata": {"name": "x"}})
    )
    model, pipeline = load_examples(tmp_path, "drill-ae")
    assert pipeline["metadata"]["name"] == "sensor-training"
    settings = DemoSettings().quick()
    doc = demo_model(model, settings, "demo-ns")
    assert doc["metadata"] == {"name": "drill-ae", "namespace": "demo-ns"}
    assert doc["spec"]["monitoring"] == {"windowSize": 300, "enabled": True, "retrainOnDrift": True}
    assert doc["spec"]["training"] == {"epochs": 3}
    # The Model's own data quality policy: no demo workaround for the drift run's shifted
    # window (distribution is advisory in drift-triggered runs, see loopline.data.quality).
    assert "validation" not in doc["spec"]
    with pytest.raises(ValueError, match="extra"):
        DemoSettings(distribution_minimum=0.0)  # type: ignore[call-arg]  # the old workaround
    assert doc["spec"]["serving"]["canary"]["stepSeconds"] == 2
    assert MODEL["spec"]["monitoring"] == {"windowSize": 500}  # the example is not modified
    full = demo_model(model, DemoSettings(), "demo-ns")
    assert full["spec"]["monitoring"]["windowSize"] == 500
    assert "training" not in full["spec"]
    assert demo_pipeline(pipeline, "demo-ns")["metadata"]["namespace"] == "demo-ns"


def test_missing_examples_name_the_piece(tmp_path: Path) -> None:
    with pytest.raises(MissingPiece, match="no example Model named 'drill-ae'"):
        load_examples(tmp_path, "drill-ae")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(MODEL))
    with pytest.raises(MissingPiece, match="Pipeline 'sensor-training'"):
        load_examples(tmp_path, "drill-ae")


def test_only_the_loops_own_retraining_can_fail_the_loop() -> None:
    """A second drift request while the new champion's canary runs may train a challenger the
    gate rejects (a full demo run did, 2026-11-29); the loop still ends with its own
    challenger serving. The loop's challenger rejected, or its run failed, ends the loop."""
    from loopline.demo.record import DemoRecord
    from loopline.demo.scenario import loop_failure

    rec = DemoRecord(model="drill-ae", namespace="ns", core_features=[])
    rec.upsert_run("run-1", trigger="spec-change", phase="Failed", started_t=1.0)
    assert loop_failure(rec, "promoted") is None  # not a drift run
    rec.upsert_run("run-2", trigger="drift", phase="Succeeded", started_t=10.0)
    rec.mark("gate-passed", "version 2 beats the champion", t=20.0)
    rec.upsert_run("run-3", trigger="drift", phase="Failed", started_t=30.0)
    rec.mark("gate-rejected", "f1 0.83 < champion v2 0.85 + margin 0.01", t=40.0)
    assert loop_failure(rec, "promoted") is None

    rejected = DemoRecord(model="drill-ae", namespace="ns", core_features=[])
    rejected.mark("gate-rejected", "below policy minimums: f1 0.14 < minimum 0.60", t=5.0)
    assert loop_failure(rejected, "registered") is None  # not waiting on the gate yet
    failure = loop_failure(rejected, "gate-passed")
    assert (
        failure == "the gate rejected the challenger: below policy minimums: f1 0.14 < minimum 0.60"
    )

    failed = DemoRecord(model="drill-ae", namespace="ns", core_features=[])
    failed.upsert_run(
        "run-9",
        trigger="drift",
        phase="Failed",
        step="load-features",
        started_t=3.0,
        message="no rows",
    )
    assert loop_failure(failed, "registered") == (
        "the retraining run run-9 failed at step load-features: no rows"
    )


def test_a_history_that_cannot_be_read_is_a_note_not_a_crash(tmp_path: Path) -> None:
    """The run's end reads the ledger; an API server that is gone leaves a note and the
    report's history section says it was not measured."""
    import socket

    from kubernetes import client as k8s

    from loopline.demo.report import write_report
    from loopline.demo.scenario import Demo

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    config.retries = 0
    demo = Demo(DemoSettings(state_dir=tmp_path / "state", namespace="plant"), keep=True)
    demo.api = k8s.ApiClient(config)
    try:
        demo.read_history()
    finally:
        demo.api.close()
    assert demo.record.history == {}
    assert any(
        n.startswith("the history of plant/drill-ae could not be read") for n in demo.record.notes
    )
    doc = write_report(demo.record, tmp_path / "report").read_text()
    assert "Not measured in this run" in doc.split("<h2>Production history</h2>")[1]
