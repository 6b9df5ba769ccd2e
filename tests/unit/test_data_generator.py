from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.data.generator import (
    DATA_FILE,
    MANIFEST_FILE,
    SCHEMA_FILE,
    GeneratorConfig,
    Manifest,
    RecipeChange,
    generate,
    live_traffic,
    machine_ids,
    write_dataset,
)
from loopline.data.schema import (
    CORE_SENSORS,
    ENTITY,
    FAULT_TYPE,
    IS_FAULT,
    SENSORS,
    TIMESTAMP,
    DatasetSchema,
    factory_schema,
)

SMALL = GeneratorConfig(machines=3, days=4, interval_seconds=300, seed=7)


def _rows(frame: pd.DataFrame, machine: str, start: datetime, end: datetime) -> pd.DataFrame:
    ts = frame[TIMESTAMP]
    return frame[(frame[ENTITY] == machine) & (ts >= start) & (ts < end)]


def test_same_config_same_data_and_manifest() -> None:
    a, ma = generate(SMALL)
    b, mb = generate(SMALL)
    pd.testing.assert_frame_equal(a, b)
    assert ma == mb
    c, _ = generate(SMALL.model_copy(update={"seed": 8}))
    assert not np.allclose(a[list(SENSORS)].fillna(0), c[list(SENSORS)].fillna(0))


def test_frame_follows_the_schema() -> None:
    frame, manifest = generate(SMALL)
    factory_schema().validate_frame(frame)
    assert list(frame.columns) == factory_schema().columns
    assert len(frame) == SMALL.rows == manifest.rows == 3 * 4 * 288
    assert str(frame[TIMESTAMP].dt.tz) == "UTC"
    assert all(frame[s].dtype == np.float32 for s in SENSORS)
    assert sorted(frame[ENTITY].unique()) == machine_ids(3) == ["drill-01", "drill-02", "drill-03"]
    assert frame[TIMESTAMP].is_monotonic_increasing
    assert manifest.start == SMALL.start
    assert manifest.end == SMALL.start + timedelta(days=4)


def test_labelled_faults_match_the_manifest_and_move_several_sensors() -> None:
    cfg = GeneratorConfig(machines=4, days=10, seed=3, fault_fraction=0.05)
    frame, manifest = generate(cfg)
    faults = [e for e in manifest.events if e.labelled]
    assert {e.kind for e in faults} >= {"tool_breakage", "coolant_loss"}
    labelled = np.zeros(len(frame), dtype=bool)
    for e in faults:
        rows = _rows(frame, e.machine_id, e.start, e.end)
        assert (rows[FAULT_TYPE] == e.kind).all()
        assert (rows[IS_FAULT] == 1).all()
        assert len(e.sensors) >= 3
        labelled[rows.index] = True
    # Exactly the manifest's windows are labelled.
    assert (frame[IS_FAULT].to_numpy() == 1).sum() == labelled.sum()
    assert 0.01 < frame[IS_FAULT].mean() < 0.1
    # Coolant loss: flow well below the machine's normal flow.
    e = next(e for e in faults if e.kind == "coolant_loss")
    during = _rows(frame, e.machine_id, e.start + (e.end - e.start) / 2, e.end)
    normal = frame[(frame[ENTITY] == e.machine_id) & (frame[IS_FAULT] == 0)]
    assert during["coolant_flow"].median() < 0.6 * normal["coolant_flow"].median()
    assert during["coolant_temperature"].median() > normal["coolant_temperature"].median() + 5


def test_sensor_faults_are_in_the_manifest() -> None:
    frame, manifest = generate(GeneratorConfig(machines=3, days=6, seed=2, sensor_faults_per_day=3))
    kinds = {e.kind for e in manifest.events}
    assert {"nan_run", "stuck", "spike", "part_replacement"} <= kinds
    for e in manifest.of_kind("nan_run"):
        rows = _rows(frame, e.machine_id, e.start, e.end)
        assert rows[e.sensors[0]].isna().all()
    for e in manifest.of_kind("stuck"):
        rows = _rows(frame, e.machine_id, e.start, e.end)
        assert rows[e.sensors[0]].nunique() == 1
    # NaNs appear only inside NaN runs.
    nan_rows = sum(
        len(_rows(frame, e.machine_id, e.start, e.end)) for e in manifest.of_kind("nan_run")
    )
    assert int(frame[list(SENSORS)].isna().any(axis=1).sum()) == nan_rows


def test_no_sensor_faults_when_disabled() -> None:
    frame, manifest = generate(SMALL.model_copy(update={"sensor_faults_per_day": 0.0}))
    assert not manifest.of_kind("nan_run", "stuck", "spike")
    assert not frame[list(SENSORS)].isna().any().any()


def test_recipe_change_shifts_the_operating_point_by_the_configured_size() -> None:
    at = SMALL.start + timedelta(days=2)
    base, _ = generate(SMALL.model_copy(update={"sensor_faults_per_day": 0.0, "fault_fraction": 0}))
    for shift in (0.1, 0.3):
        cfg = SMALL.model_copy(
            update={
                "recipe_changes": [RecipeChange(at=at, shift=shift)],
                "sensor_faults_per_day": 0.0,
                "fault_fraction": 0.0,
            }
        )
        frame, manifest = generate(cfg)
        assert len(manifest.of_kind("recipe_change")) == 3
        before = frame[frame[TIMESTAMP] < at]["feed_rate"].mean()
        after = frame[frame[TIMESTAMP] >= at]["feed_rate"].mean()
        assert after / before == pytest.approx(1 + shift, rel=0.02)
        # Before the change nothing differs from the unchanged history.
        early = base[TIMESTAMP] < at
        np.testing.assert_allclose(
            frame.loc[early, "spindle_torque"], base.loc[early, "spindle_torque"]
        )
        assert frame.loc[~early, "spindle_vibration_rms"].mean() > base.loc[
            ~early, "spindle_vibration_rms"
        ].mean() * (1 + shift)


def test_recipe_change_on_unknown_machine_is_an_error() -> None:
    cfg = SMALL.model_copy(
        update={"recipe_changes": [RecipeChange(at=SMALL.start, machines=["drill-99"])]}
    )
    with pytest.raises(ValueError, match="drill-99"):
        generate(cfg)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        GeneratorConfig(start=datetime(2026, 1, 1))


def test_live_traffic_continues_the_history() -> None:
    hist, manifest = generate(SMALL)
    live, live_manifest = live_traffic(manifest, minutes=120)
    assert live[TIMESTAMP].min() == manifest.end
    assert len(live) == 3 * 24
    assert sorted(live[ENTITY].unique()) == manifest.machines
    # Same machines: per-machine core-sensor medians close to the same hours a day earlier.
    ts = hist[TIMESTAMP]
    last = hist[
        (ts >= manifest.end - timedelta(hours=24)) & (ts < manifest.end - timedelta(hours=22))
    ]
    for sensor in CORE_SENSORS:
        h = last.groupby(ENTITY)[sensor].median()
        v = live.groupby(ENTITY)[sensor].median()
        assert np.allclose(h, v, rtol=0.1), sensor
    assert live_manifest.start == manifest.end
    # Deterministic.
    again, _ = live_traffic(manifest, minutes=120)
    pd.testing.assert_frame_equal(live, again)


def test_live_traffic_with_recipe_change() -> None:
    _, manifest = generate(SMALL)
    at = manifest.end + timedelta(minutes=60)
    live, m = live_traffic(
        manifest, minutes=120, recipe_change_at=at, recipe_shift=0.2, sensor_faults_per_day=0
    )
    assert [e.start for e in m.of_kind("recipe_change")] == [at] * 3
    before = live[live[TIMESTAMP] < at]["spindle_speed"].mean()
    after = live[live[TIMESTAMP] >= at]["spindle_speed"].mean()
    assert after / before == pytest.approx(1.2, rel=0.02)


def test_write_dataset(tmp_path: Path) -> None:
    frame, manifest = generate(SMALL)
    path = write_dataset(frame, manifest, tmp_path / "out")
    assert path.name == DATA_FILE
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)
    assert Manifest.load(tmp_path / "out" / MANIFEST_FILE) == manifest
    assert DatasetSchema.load(tmp_path / "out" / SCHEMA_FILE) == factory_schema()


def test_start_time_is_utc() -> None:
    cfg = GeneratorConfig(start=datetime(2026, 3, 1, 12, tzinfo=UTC), machines=1, days=0.01)
    frame, _ = generate(cfg)
    assert frame[TIMESTAMP].iloc[0] == pd.Timestamp("2026-03-01 12:00", tz="UTC")
