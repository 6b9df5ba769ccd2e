"""The train-model and evaluate-model steps on generated data, as the pipeline runs them,
write the reliability figures and both baselines to MLflow and the run report.

Real training (torch), a real SQLite MLflow; the features folder is written the way
load-features writes it (no Feast here: that step has its own tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopline.components import model_steps
from loopline.components.steps import FRAME_FILE, META_FILE, REPORT_ARTIFACT_DIR
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import factory_schema
from loopline.tracking.experiments import client_for
from loopline.types.common import Task, Trigger
from loopline.types.runs import TrainingRunSpec

# 3 machines x 6 days at 2 minutes: faults in the newest fifth of the fault rows too.
DATA = GeneratorConfig(machines=3, days=6, interval_seconds=120, seed=3, fault_fraction=0.06)


def _features(folder: Path) -> Path:
    frame, _ = generate(DATA)
    folder.mkdir(parents=True)
    frame.to_parquet(folder / FRAME_FILE, index=False)
    ts = frame["event_timestamp"]
    meta = {
        "roles": factory_schema().roles(Task.ANOMALY_DETECTION).model_dump(mode="json"),
        "window_start": ts.min().isoformat(),
        "window_end": ts.max().isoformat(),
        "data_hash": "generated",
    }
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def _spec(tracking_uri: str, **overrides: object) -> TrainingRunSpec:
    doc: dict[str, object] = {
        "runId": "alarms-1",
        "namespace": "plant",
        "modelName": "drill-ae",
        "task": Task.ANOMALY_DETECTION,
        "trigger": Trigger.MANUAL,
        "featureService": "all_sensors",
        "registeredModelName": "plant.drill-ae",
        "mlflowTrackingUri": tracking_uri,
        "featureRepo": "unused-by-these-steps",
        "params": {"epochs": 8, "seed": 0},
    }
    return TrainingRunSpec.model_validate(doc | overrides)


DETECTORS = ("", "fallback_", "baseline_", "pca_")
FIGURES = (
    "precision",
    "recall",
    "f1",
    "far",
    "mar",
    "alarm_events_per_entity_day",
    "false_alarm_events_per_entity_day",
    "fault_events_detected",
    "detection_delay_median_readings",
)


@pytest.mark.slow
def test_training_step_logs_reliability_and_both_baselines(
    tmp_path: Path, training_mlflow_uri: str
) -> None:
    features = _features(tmp_path / "features")
    spec = _spec(training_mlflow_uri)
    model_dir = tmp_path / "model"
    trained = model_steps.train_model(
        spec.model_dump_json(by_alias=True), str(features), str(model_dir)
    )
    report = tmp_path / "evaluation.md"
    answer = json.loads(
        model_steps.evaluate_model(
            spec.model_dump_json(by_alias=True), str(features), str(model_dir), str(report)
        )
    )
    client = client_for(training_mlflow_uri)
    run_id = trained["mlflow_run_id"]
    logged = client.get_run(run_id).data.metrics
    for prefix in DETECTORS:
        for figure in FIGURES:
            assert prefix + figure in logged, prefix + figure
            assert logged[prefix + figure] == pytest.approx(answer[prefix + figure])
    assert logged["eval_fault_events"] >= 1
    assert logged["pca_components"] >= 1
    for prefix in DETECTORS:
        assert 0 <= logged[prefix + "far"] <= 1
        assert logged[prefix + "mar"] == pytest.approx(1 - logged[prefix + "recall"])
    assert "f1_gain_over_pca" in logged
    markdown = report.read_text()
    assert "### Alarms" in markdown
    assert "| baseline: PCA T² + Q |" in markdown
    assert r"| baseline: max-\|z\| |" in markdown  # escaped, so the table keeps its columns
    row = next(line for line in markdown.splitlines() if line.startswith("| primary"))
    header = next(line for line in markdown.splitlines() if line.startswith("| detector"))
    assert row.count(" | ") == header.count(" | ")
    artifacts = Path(client.download_artifacts(run_id, REPORT_ARTIFACT_DIR, str(tmp_path)))
    assert (artifacts / "evaluation.md").read_text() == markdown
    faults = json.loads((artifacts / "fault_events.json").read_text())
    assert set(faults) == {"primary", "fallback_", "baseline_", "pca_"}
    assert len(faults["primary"]) == int(logged["eval_fault_events"])


@pytest.mark.slow
def test_a_false_alarm_budget_sets_every_threshold_and_is_judged(
    tmp_path: Path, training_mlflow_uri: str
) -> None:
    from loopline.models.bundle import ModelBundle

    features = _features(tmp_path / "features")
    budget = 0.01
    spec = _spec(
        training_mlflow_uri, alarms={"maxFalseAlarmRate": budget, "raiseAt": 2, "window": 4}
    )
    doc = spec.model_dump_json(by_alias=True)
    model_dir = tmp_path / "model"
    trained = model_steps.train_model(doc, str(features), str(model_dir))
    bundle = ModelBundle.load_dir(model_dir)
    assert bundle.metadata["alarms"]["maxFalseAlarmRate"] == budget
    report = tmp_path / "evaluation.md"
    model_steps.evaluate_model(doc, str(features), str(model_dir), str(report))
    logged = client_for(training_mlflow_uri).get_run(trained["mlflow_run_id"]).data.metrics
    assert logged["max_false_alarm_rate"] == budget
    for prefix in DETECTORS:
        met = logged[prefix + "far_budget_met"]
        assert met == float(logged[prefix + "far"] <= budget), prefix
    assert "False-alarm budget: FAR <= 0.01." in report.read_text()
    assert "| FAR within budget |" in report.read_text()
