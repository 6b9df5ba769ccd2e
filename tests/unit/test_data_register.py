"""Bring-your-own data: schema declaration and the clear errors of `loopline data register`.

Every error case fails before Feast is touched, so these run without any store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.data.register import declare_schema
from loopline.data.schema import DatasetSchema, FeatureSpec, SchemaError
from loopline.types.common import Task
from loopline.types.dataset import LabelKind


def _user_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pump": ["p1", "p1", "p2", "p2"],
            "at": ["2026-03-01T00:00:00Z", "2026-03-01T00:01:00Z"] * 2,
            "flow": [1.0, 1.1, 2.0, 2.1],
            "rpm": [100, 101, 200, 201],
            "site": ["a", "a", "b", "b"],
            "state": ["ok", "ok", "bad", "ok"],
        }
    )


def test_declare_schema_infers_numeric_features() -> None:
    schema = declare_schema(_user_frame(), entity="pump", timestamp="at", label="state")
    assert schema.feature_names == ["flow", "rpm"]
    assert schema.feature("rpm").dtype == "int"
    assert schema.feature("flow").dtype == "float"
    assert schema.label_names == ["state"]
    assert schema.labels[0].dtype == "str"


def test_declare_schema_names_a_missing_entity() -> None:
    with pytest.raises(SchemaError, match=r"entity column 'machine' \(--entity\) is not in"):
        declare_schema(_user_frame(), entity="machine", timestamp="at", label="state")


def test_declare_schema_rejects_unknown_core() -> None:
    with pytest.raises(SchemaError, match="core"):
        declare_schema(_user_frame(), entity="pump", timestamp="at", label="state", core=["nope"])


def _register(tmp_path: Path, frame: pd.DataFrame, *args: str) -> tuple[int, str]:
    source = tmp_path / "mine.csv"
    frame.to_csv(source, index=False)
    result = CliRunner().invoke(
        cli,
        ["data", "register", "--source", str(source), "--repo", str(tmp_path / "repo"), *args],
    )
    return result.exit_code, result.output


BASE = ("--entity", "pump", "--timestamp", "at", "--label", "state")


def test_register_missing_column(tmp_path: Path) -> None:
    code, out = _register(tmp_path, _user_frame(), *BASE, "--features", "flow,pressure")
    assert code == 1
    assert "missing column(s) ['pressure']" in out


def test_register_wrong_dtype(tmp_path: Path) -> None:
    code, out = _register(tmp_path, _user_frame(), *BASE, "--features", "flow,site")
    assert code == 1
    assert "feature column 'site' has dtype object; expected float" in out


def test_register_no_timestamps(tmp_path: Path) -> None:
    frame = _user_frame().assign(at=["monday", "tuesday", "monday", "tuesday"])
    code, out = _register(tmp_path, frame, *BASE)
    assert code == 1
    assert "timestamp column 'at' does not hold timestamps" in out


def test_register_empty_timestamps(tmp_path: Path) -> None:
    frame = _user_frame().assign(at=[None] * 4)
    code, out = _register(tmp_path, frame, *BASE)
    assert code == 1
    assert "timestamp column 'at'" in out


def test_register_duplicate_keys(tmp_path: Path) -> None:
    frame = pd.concat([_user_frame(), _user_frame().iloc[[2]]], ignore_index=True)
    code, out = _register(tmp_path, frame, *BASE)
    assert code == 1
    assert "1 duplicate (pump, at) keys, e.g. (p2, 2026-03-01 00:00:00+00:00)" in out


def test_register_needs_the_entity_named(tmp_path: Path) -> None:
    """No entity name is assumed: the generated data's `machine_id` is not a default."""
    code, out = _register(tmp_path, _user_frame(), "--timestamp", "at", "--label", "state")
    assert code == 2
    assert "--entity is required" in out
    assert "'pump'" in out  # the file's columns, to pick from


def test_register_missing_entity_column(tmp_path: Path) -> None:
    code, out = _register(tmp_path, _user_frame(), "--entity", "machine_id", *BASE[2:])
    assert code == 1
    assert "entity column 'machine_id' (--entity) is not in the file" in out


def test_register_without_label_names_the_flag(tmp_path: Path) -> None:
    """Leaving out --label used to register the label as a feature and fail at training."""
    code, out = _register(tmp_path, _user_frame().drop(columns="site"), *BASE[:4])
    assert code == 1
    assert "no label column: pass --label COLUMN" in out
    assert not (tmp_path / "repo").exists()


def test_register_wrong_label_names_the_column_and_the_columns(tmp_path: Path) -> None:
    code, out = _register(tmp_path, _user_frame(), *BASE[:4], "--label", "is_fault")
    assert code == 1
    assert "label column 'is_fault' (--label) is not in the file" in out
    assert "['pump', 'at', 'flow', 'rpm', 'site', 'state']" in out
    assert not (tmp_path / "repo").exists()


def test_a_flag_label_with_other_values_is_refused(tmp_path: Path) -> None:
    frame = _user_frame().assign(state=[0, 1, 2, 0])
    code, out = _register(tmp_path, frame, *BASE, "--label-kind", "anomaly-flag")
    assert code == 1
    assert "label column 'state' is an anomaly flag but holds ['2']" in out


@pytest.mark.parametrize(
    ("values", "kind", "declared", "expected"),
    [
        ([0, 1, 0, 0], None, "int", LabelKind.ANOMALY_FLAG),
        ([False, True, False, False], None, "bool", LabelKind.ANOMALY_FLAG),
        ([0.0, 1.0, None, 0.0], None, "str", LabelKind.ANOMALY_FLAG),
        (["ok", "ok", "bad", "ok"], None, "str", LabelKind.CLASS),
        ([0, 1, 0, 0], LabelKind.CLASS, "int", LabelKind.CLASS),
        ([0, 1, 2, 3], None, "int", LabelKind.CLASS),
    ],
)
def test_label_kind_is_recorded(
    values: list[object], kind: LabelKind | None, declared: str, expected: LabelKind
) -> None:
    frame = _user_frame().assign(state=values)
    schema = declare_schema(frame, entity="pump", timestamp="at", label="state", label_kind=kind)
    (label,) = schema.labels
    assert (label.name, label.kind, label.dtype) == ("state", expected, declared)
    if expected == LabelKind.CLASS:
        assert label.values == sorted({str(v) for v in values})
    assert "state" not in schema.feature_names


def test_roles_name_the_label_the_task_trains_on() -> None:
    frame = _user_frame().assign(state=[0, 1, 0, 0])
    schema = declare_schema(frame, entity="pump", timestamp="at", label="state", core=["flow"])
    roles = schema.roles(Task.ANOMALY_DETECTION)
    assert (roles.entity, roles.timestamp, roles.label) == ("pump", "at", "state")
    assert roles.features == ["flow", "rpm"]
    assert roles.core_features == ["flow"]
    assert roles.label_kind == LabelKind.ANOMALY_FLAG
    with pytest.raises(SchemaError, match=r"classification needs a label of kind class.*state"):
        schema.roles(Task.CLASSIFICATION)


def test_register_refuses_a_schema_without_label(tmp_path: Path) -> None:
    from loopline.data.register import register

    source = tmp_path / "mine.csv"
    _user_frame().to_csv(source, index=False)
    schema = DatasetSchema(entity="pump", timestamp="at", features=[FeatureSpec(name="flow")])
    with pytest.raises(SchemaError, match="declares no label"):
        register(source, tmp_path / "repo", schema)
    assert not (tmp_path / "repo").exists()
