from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.data.schema import (
    CORE_SENSORS,
    ENTITY,
    SENSORS,
    TIMESTAMP,
    DatasetSchema,
    FeatureSpec,
    SchemaError,
    factory_schema,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "site": ["a", "a", "b"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-01"], utc=True),
            "temp": [1.0, 2.0, 3.0],
            "count": [1, 2, 3],
        }
    )


def _schema() -> DatasetSchema:
    return DatasetSchema(
        name="plant",
        entity="site",
        timestamp="ts",
        features=[FeatureSpec(name="temp"), FeatureSpec(name="count", dtype="int")],
    )


def test_factory_schema_follows_the_column_contract() -> None:
    schema = factory_schema()
    assert schema.feature_names == list(SENSORS)
    assert len(SENSORS) == 12
    assert SENSORS[:4] == CORE_SENSORS
    assert schema.core_feature_names == list(CORE_SENSORS)
    assert schema.entity == ENTITY
    assert schema.timestamp == TIMESTAMP
    assert schema.label_names == ["fault_type", "is_fault"]


def test_schema_round_trips_through_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schema = factory_schema()
    path = schema.save(tmp_path / "schema.json")
    assert DatasetSchema.load(path) == schema


def test_schema_rejects_unknown_core_and_bad_range() -> None:
    with pytest.raises(ValidationError, match="core"):
        DatasetSchema(entity="e", timestamp="t", features=[FeatureSpec(name="a")], core=["b"])
    with pytest.raises(ValidationError, match="min"):
        FeatureSpec(name="a", min=2, max=1)


def test_valid_frame_passes() -> None:
    _schema().validate_frame(_frame())


def test_missing_column_is_named() -> None:
    with pytest.raises(SchemaError, match=r"missing column.*'temp'"):
        _schema().validate_frame(_frame().drop(columns=["temp"]))


def test_wrong_dtype_is_named() -> None:
    df = _frame().assign(temp=["x", "y", "z"])
    with pytest.raises(SchemaError, match=r"'temp' has dtype object; expected float"):
        _schema().validate_frame(df)


def test_no_timestamps_is_named() -> None:
    df = _frame().assign(ts=["monday", "tuesday", "friday"])
    with pytest.raises(SchemaError, match=r"timestamp column 'ts'.*not timestamps"):
        _schema().validate_frame(df)
    df = _frame().assign(ts=pd.Series([pd.NaT] * 3, dtype="datetime64[ns, UTC]"))
    with pytest.raises(SchemaError, match="no timestamps"):
        _schema().validate_frame(df)


def test_duplicate_keys_are_named() -> None:
    df = pd.concat([_frame(), _frame().iloc[[0]]], ignore_index=True)
    with pytest.raises(SchemaError, match=r"1 duplicate \(site, ts\) keys"):
        _schema().validate_frame(df)


def test_checked_in_feature_repo_describes_the_factory_data() -> None:
    from loopline.data.features import OFFLINE_STORE_TYPE, TEMPLATE_DIR, RepoSpec

    spec = RepoSpec.load(TEMPLATE_DIR)
    assert spec.data_schema == factory_schema()
    assert spec.source == "data/sensors.parquet"
    yaml = (TEMPLATE_DIR / "feature_store.yaml").read_text()
    assert f"type: {OFFLINE_STORE_TYPE}" in yaml
    assert "entity_key_serialization_version: 3" in yaml


def test_a_schema_written_before_label_kinds_reads_them_from_the_values() -> None:
    """repo.json files registered before `kind` existed: 0/1 flags and class names."""
    doc = factory_schema().model_dump(mode="json")
    for label in doc["labels"]:
        del label["kind"]
    old = DatasetSchema.model_validate(doc)
    assert [(label.name, str(label.kind)) for label in old.labels] == [
        ("fault_type", "class"),
        ("is_fault", "anomaly-flag"),
    ]


def test_factory_roles_per_task() -> None:
    from loopline.types.common import Task

    assert factory_schema().roles(Task.ANOMALY_DETECTION).label == "is_fault"
    classification = factory_schema().roles(Task.CLASSIFICATION)
    assert classification.label == "fault_type"
    assert classification.classes == ["none", "bearing_wear", "tool_breakage", "coolant_loss"]


def test_schema_needs_entity_and_timestamp_named() -> None:
    with pytest.raises(ValidationError, match="entity"):
        DatasetSchema(timestamp="t", features=[FeatureSpec(name="a")])


def test_templates_are_found_where_the_environment_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel (the images) has no checkout beside it: the templates come from
    the directory LOOPLINE_OPERATOR_FEATURE_REPO names, and without one the error says so."""
    from loopline.data import features

    monkeypatch.setattr(features, "TEMPLATE_DIR", tmp_path / "no-checkout")
    monkeypatch.delenv(features.TEMPLATE_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=features.TEMPLATE_DIR_ENV):
        features.template_dir()
    shipped = tmp_path / "opt-feature-repo"
    shipped.mkdir()
    for name in (features.FEATURE_STORE_YAML, features.DEFINITIONS_FILE):
        (shipped / name).write_text("# template\n")
    monkeypatch.setenv(features.TEMPLATE_DIR_ENV, str(shipped))
    assert features.template_dir() == shipped
    repo = tmp_path / "repo"
    repo.mkdir()
    features._copy_templates(repo)
    assert (repo / features.DEFINITIONS_FILE).read_text() == "# template\n"
