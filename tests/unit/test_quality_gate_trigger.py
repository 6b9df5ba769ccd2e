"""The data quality gate and the run's trigger: in a drift-triggered run the distribution
dimension is advisory (scored and reported in full, not gating); every other dimension, and
every other trigger, gates as before. Real Great Expectations on a small generated window
(a few hundred rows), no servers; the pipeline step runs against a SQLite MLflow."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from loopline.components import steps
from loopline.data.features import RepoSpec
from loopline.data.generator import GeneratorConfig, RecipeChange, generate
from loopline.data.quality import (
    DRIFT_ADVISORY,
    PSI_SHIFTED,
    QualityGateError,
    QualityReport,
    ReferenceStats,
    advisory_dimensions,
    enforce,
    reference_stats,
    run_gate,
)
from loopline.data.schema import TIMESTAMP, factory_schema
from loopline.types.common import Trigger, registered_model_name
from loopline.types.runs import TrainingRunSpec

CFG = GeneratorConfig(machines=2, days=4, interval_seconds=600, seed=5)
SCHEMA = factory_schema()
CUT = CFG.start + timedelta(days=2)


@pytest.fixture(scope="module")
def reference() -> ReferenceStats:
    """The champion's training data: the first two days, before any recipe change."""
    frame, _ = generate(CFG)
    return reference_stats(frame[frame[TIMESTAMP] < CUT].reset_index(drop=True), SCHEMA)


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    """The retraining window: the last two days, after a recipe change (what drift looks like)."""
    cfg = CFG.model_copy(update={"recipe_changes": [RecipeChange(at=CUT, shift=0.3)]})
    frame, _ = generate(cfg)
    return frame[frame[TIMESTAMP] >= CUT].reset_index(drop=True)


def _gate(frame: pd.DataFrame, reference: ReferenceStats, trigger: object) -> QualityReport:
    return run_gate(frame, SCHEMA, None, reference, window_end=CFG.end, trigger=trigger)  # type: ignore[arg-type]


def _with_missing(frame: pd.DataFrame, column: str, share: float) -> pd.DataFrame:
    bad = frame.copy()
    rows = np.random.default_rng(0).choice(len(bad), int(len(bad) * share), replace=False)
    bad.loc[rows, column] = np.nan
    return bad


def test_only_drift_makes_distribution_advisory() -> None:
    assert advisory_dimensions(Trigger.DRIFT) == {"distribution": DRIFT_ADVISORY}
    assert advisory_dimensions("drift") == {"distribution": DRIFT_ADVISORY}
    for trigger in (Trigger.MANUAL, Trigger.SCHEDULE, Trigger.SPEC_CHANGE, None):
        assert advisory_dimensions(trigger) == {}
    with pytest.raises(ValueError, match="sometimes"):
        advisory_dimensions("sometimes")


def test_drift_run_passes_a_shifted_window_with_distribution_advisory(
    reference: ReferenceStats, shifted: pd.DataFrame
) -> None:
    report = _gate(shifted, reference, Trigger.DRIFT)
    assert report.passed, report.summary
    enforce(report)  # does not raise
    dist = report.dimensions["distribution"]
    # Scored and reported in full: the failing score is visible, only its verdict does not gate.
    assert dist.advisory
    assert not dist.passed
    assert dist.score < dist.threshold == 0.8
    assert dist.failed_checks > 0
    assert "advisory: run triggered by drift" in dist.note
    assert set(report.psi) == set(SCHEMA.feature_names)
    shifted_features = {f for f, v in report.psi.items() if v is not None and v > PSI_SHIFTED}
    assert {"feed_rate", "spindle_speed"} <= shifted_features
    failures = [f for f in report.failures if f.dimension == "distribution"]
    assert {f.column for f in failures} == shifted_features
    assert all(f.advisory and "PSI" in f.observed for f in failures)
    # Every other dimension still gates (and passes on this data).
    others = {n: d for n, d in report.dimensions.items() if n != "distribution"}
    assert all(d.passed and not d.advisory for d in others.values())
    assert report.advisory() == ["distribution"]
    assert report.summary.startswith("data quality passed")
    assert f"distribution {dist.score:.3f} < 0.800" in report.summary
    assert "advisory: run triggered by drift" in report.summary


@pytest.mark.parametrize("trigger", [Trigger.MANUAL, Trigger.SCHEDULE, Trigger.SPEC_CHANGE, None])
def test_other_runs_fail_the_same_window_on_distribution(
    reference: ReferenceStats, shifted: pd.DataFrame, trigger: Trigger | None
) -> None:
    report = _gate(shifted, reference, trigger)
    assert not report.passed
    assert [n for n, d in report.dimensions.items() if not d.passed] == ["distribution"]
    assert not report.dimensions["distribution"].advisory
    assert report.advisory() == []
    assert not any(f.advisory for f in report.failures)
    assert "advisory" not in report.summary
    with pytest.raises(QualityGateError, match=r"FAILED .*distribution 0\.\d+ < 0\.800"):
        enforce(report)
    # The same scores as the drift run: only the verdict differs.
    drift = _gate(shifted, reference, Trigger.DRIFT)
    assert drift.scores() == report.scores()
    assert drift.psi == report.psi


def test_drift_run_with_a_completeness_failure_still_fails(
    reference: ReferenceStats, shifted: pd.DataFrame
) -> None:
    report = _gate(_with_missing(shifted, "spindle_current", 0.2), reference, Trigger.DRIFT)
    assert not report.passed
    completeness = report.dimensions["completeness"]
    assert not completeness.passed
    assert not completeness.advisory
    assert report.dimensions["distribution"].advisory
    assert report.summary.startswith("data quality FAILED")
    failed_part = report.summary.split("[advisory")[0]
    assert "completeness" in failed_part
    assert "spindle_current" in failed_part
    # The advisory distribution is named too, marked as such, never as the reason for failing.
    assert "distribution" in report.summary
    assert DRIFT_ADVISORY in report.summary
    with pytest.raises(QualityGateError, match="completeness"):
        enforce(report)


def test_report_with_advisory_and_psi_is_a_json_artifact(
    tmp_path: Path, reference: ReferenceStats, shifted: pd.DataFrame
) -> None:
    dead = shifted.copy()
    dead["coolant_flow"] = np.nan  # a dead sensor: no PSI to compute (null in the report)
    report = _gate(dead, reference, Trigger.DRIFT)
    assert report.psi["coolant_flow"] is None
    again = QualityReport.load(report.save(tmp_path / "report.json"))
    assert again == report
    assert again.dimensions["distribution"].advisory


def test_markdown_marks_the_advisory_dimension_and_lists_psi(
    reference: ReferenceStats, shifted: pd.DataFrame
) -> None:
    text = steps.quality_markdown(_gate(shifted, reference, Trigger.DRIFT))
    assert "**passed**" in text
    assert "| distribution | " in text
    assert "| no (advisory: run triggered by drift) |" in text
    assert "| completeness | 1.0000 | 0.9500 | yes | yes |" in text
    assert "| feed_rate | " in text
    assert "| yes |" in text
    assert "| distribution (advisory) | population_stability_index |" in text
    manual = steps.quality_markdown(_gate(shifted, reference, Trigger.MANUAL))
    assert "**FAILED**" in manual
    assert "advisory" not in manual


# --- the pipeline step: the run spec's trigger reaches the gate --------------------------------


def _step_inputs(
    tmp_path: Path, frame: pd.DataFrame, tracking_uri: str, trigger: Trigger
) -> tuple[str, Path]:
    repo = tmp_path / f"repo-{trigger.value}"
    repo.mkdir()
    RepoSpec(data_schema=SCHEMA, source="sensors.parquet").save(repo)
    features = tmp_path / f"features-{trigger.value}"
    features.mkdir()
    frame.to_parquet(features / steps.FRAME_FILE)
    (features / steps.META_FILE).write_text(json.dumps({"window_end": CFG.end.isoformat()}))
    spec = TrainingRunSpec(
        run_id=f"run-{trigger.value}",
        namespace="plant",
        model_name="drill-ae",
        task="anomaly-detection",
        trigger=trigger,
        feature_service="all_sensors",
        registered_model_name=registered_model_name("plant", "drill-ae"),
        mlflow_tracking_uri=tracking_uri,
        feature_repo=str(repo),
    )
    return spec.model_dump_json(by_alias=True), features


def test_validate_data_step_passes_the_trigger_to_the_gate(
    tmp_path: Path,
    training_mlflow_uri: str,
    reference: ReferenceStats,
    shifted: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps, "_champion_quality_reference", lambda client, spec: reference)
    client = MlflowClient(training_mlflow_uri)

    spec_json, features = _step_inputs(tmp_path, shifted, training_mlflow_uri, Trigger.DRIFT)
    out = steps.validate_data(spec_json, str(features), str(tmp_path / "drift.md"))
    assert out["passed"] is True
    assert out["advisory"] == ["distribution"]
    assert out["scores"]["distribution"] < 0.8
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.tags[steps.QUALITY_ADVISORY_TAG] == "distribution"
    assert run.data.metrics["dq_distribution"] == out["scores"]["distribution"]
    assert run.data.metrics["dq_psi_feed_rate"] > PSI_SHIFTED
    assert "advisory: run triggered by drift" in (tmp_path / "drift.md").read_text()

    spec_json, features = _step_inputs(tmp_path, shifted, training_mlflow_uri, Trigger.MANUAL)
    with pytest.raises(QualityGateError, match="distribution"):
        steps.validate_data(spec_json, str(features), str(tmp_path / "manual.md"))
    assert "**FAILED**" in (tmp_path / "manual.md").read_text()
