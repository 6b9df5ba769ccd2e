"""The data quality gate (real Great Expectations): each dimension fails on data made bad in
exactly that way, and only that dimension; clean data passes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.data.generator import GeneratorConfig, RecipeChange, generate
from loopline.data.quality import (
    DIMENSIONS,
    QualityGateError,
    QualityReport,
    ReferenceStats,
    enforce,
    reference_stats,
    run_gate,
)
from loopline.data.schema import ENTITY, TIMESTAMP, factory_schema
from loopline.types.policy import DataQualityThresholds

CFG = GeneratorConfig(machines=3, days=8, interval_seconds=300, seed=5)
SCHEMA = factory_schema()


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame, ReferenceStats]:
    """Reference: the first 4 days; the training set under test: the last 4 days."""
    frame, _ = generate(CFG)
    cut = CFG.start + timedelta(days=4)
    ref = frame[frame[TIMESTAMP] < cut].reset_index(drop=True)
    current = frame[frame[TIMESTAMP] >= cut].reset_index(drop=True)
    return ref, current, reference_stats(ref, SCHEMA)


def _gate(frame: pd.DataFrame, reference: ReferenceStats, **kwargs: object) -> QualityReport:
    end = kwargs.pop("window_end", CFG.end)
    return run_gate(frame, SCHEMA, DataQualityThresholds(), reference, window_end=end)  # type: ignore[arg-type]


def _only_failing(report: QualityReport, dimension: str) -> None:
    failing = [name for name, d in report.dimensions.items() if not d.passed]
    assert failing == [dimension], report.summary
    assert not report.passed
    assert report.summary.startswith("data quality FAILED")
    assert dimension in report.summary
    assert any(f.dimension == dimension for f in report.failures)


def test_clean_data_passes(history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats]) -> None:
    _, current, ref = history
    report = _gate(current, ref)
    assert report.passed, report.summary
    assert set(report.dimensions) == set(DIMENSIONS)
    assert report.summary.startswith("data quality passed")
    assert all(0.9 <= s <= 1.0 for s in report.scores().values())
    assert report.dimensions["distribution"].checks == 12
    assert enforce(report) is report


def test_completeness_fails_on_nulls(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    bad = current.copy()
    rows = np.random.default_rng(0).choice(len(bad), size=len(bad) // 10, replace=False)
    bad.loc[rows, "coolant_flow"] = np.nan
    report = _gate(bad, ref)
    _only_failing(report, "completeness")
    assert report.dimensions["completeness"].score == pytest.approx(0.9, abs=0.01)
    failure = next(f for f in report.failures if f.dimension == "completeness")
    assert failure.column == "coolant_flow"
    assert failure.examples
    assert failure.examples[0].startswith("drill-")


def test_validity_fails_on_impossible_values(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    bad = current.copy()
    rows = np.random.default_rng(1).choice(len(bad), size=len(bad) // 20, replace=False)
    bad.loc[rows, "spindle_torque"] = np.float32(-5.0)  # negative torque: not a reading
    report = _gate(bad, ref)
    _only_failing(report, "validity")
    failure = next(f for f in report.failures if f.dimension == "validity")
    assert failure.column == "spindle_torque"
    assert failure.examples[0] == "-5.0"


def test_validity_fails_on_unknown_label(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    bad = current.copy()
    bad.loc[: len(bad) // 10, "fault_type"] = "gremlins"
    report = _gate(bad, ref)
    _only_failing(report, "validity")
    assert "gremlins" in next(f for f in report.failures if f.column == "fault_type").examples


def test_uniqueness_fails_on_duplicate_keys(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    bad = pd.concat([current, current.iloc[100:110]], ignore_index=True)
    report = _gate(bad, ref)
    _only_failing(report, "uniqueness")
    failure = next(f for f in report.failures if f.dimension == "uniqueness")
    assert failure.observed.startswith("20 rows share")
    assert failure.column == f"{ENTITY},{TIMESTAMP}"


def test_consistency_fails_on_a_missing_column(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    report = _gate(current.drop(columns=["power_factor"]), ref)
    _only_failing(report, "consistency")
    assert "missing ['power_factor']" in report.summary


def test_consistency_fails_on_a_changed_dtype(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    report = _gate(current.astype({"is_fault": "float64"}), ref)
    _only_failing(report, "consistency")
    failure = next(f for f in report.failures if f.dimension == "consistency")
    assert failure.column == "is_fault"
    assert "reference int" in failure.observed


def test_timeliness_fails_on_stale_data(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    report = _gate(current, ref, window_end=CFG.end + timedelta(days=2))
    _only_failing(report, "timeliness")
    assert report.dimensions["timeliness"].score == pytest.approx(24 / 48, abs=0.01)
    # Rows after the end of the window are not timely either (data from the future).
    report = _gate(current, ref, window_end=CFG.end - timedelta(hours=1))
    _only_failing(report, "timeliness")
    assert "after the window end" in report.summary


def test_distribution_fails_after_a_recipe_change(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, _, ref = history
    cut = CFG.start + timedelta(days=4)
    shifted_cfg = CFG.model_copy(update={"recipe_changes": [RecipeChange(at=cut, shift=0.3)]})
    frame, _ = generate(shifted_cfg)
    shifted = frame[frame[TIMESTAMP] >= cut].reset_index(drop=True)
    report = _gate(shifted, ref)
    _only_failing(report, "distribution")
    shifted_features = {f.column for f in report.failures if f.dimension == "distribution"}
    assert {"feed_rate", "spindle_speed"} <= shifted_features


def test_without_reference_distribution_is_not_scored(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, _ = history
    report = run_gate(current, SCHEMA, window_end=CFG.end)
    assert report.passed, report.summary
    assert report.dimensions["distribution"].checks == 0
    assert "no reference" in report.dimensions["distribution"].note


def test_report_and_reference_are_json_artifacts(
    tmp_path: Path, history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats]
) -> None:
    _, current, ref = history
    assert ReferenceStats.load(ref.save(tmp_path / "ref.json")) == ref
    bad = current.drop(columns=["power_factor"])
    report = _gate(bad, ref)
    assert QualityReport.load(report.save(tmp_path / "report.json")) == report
    with pytest.raises(QualityGateError, match="consistency") as err:
        enforce(report)
    assert err.value.report is report


def test_thresholds_come_from_the_policy(
    history: tuple[pd.DataFrame, pd.DataFrame, ReferenceStats],
) -> None:
    _, current, ref = history
    strict = DataQualityThresholds(completeness=1.0)
    report = run_gate(current, SCHEMA, strict, ref, window_end=CFG.end)
    assert current.isna().any().any()  # the generator's NaN runs
    assert not report.dimensions["completeness"].passed
    assert report.dimensions["completeness"].threshold == 1.0


def test_empty_training_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        run_gate(pd.DataFrame(columns=SCHEMA.columns), SCHEMA)
