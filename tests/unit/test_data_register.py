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
from loopline.data.schema import SchemaError


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
    with pytest.raises(SchemaError, match=r"entity column 'machine' not in the file"):
        declare_schema(_user_frame(), entity="machine", timestamp="at")


def test_declare_schema_rejects_unknown_core() -> None:
    with pytest.raises(SchemaError, match="core"):
        declare_schema(_user_frame(), entity="pump", timestamp="at", core=["nope"])


def _register(tmp_path: Path, frame: pd.DataFrame, *args: str) -> tuple[int, str]:
    source = tmp_path / "mine.csv"
    frame.to_csv(source, index=False)
    result = CliRunner().invoke(
        cli,
        ["data", "register", "--source", str(source), "--repo", str(tmp_path / "repo"), *args],
    )
    return result.exit_code, result.output


BASE = ("--entity", "pump", "--timestamp", "at")


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


def test_register_missing_entity_column(tmp_path: Path) -> None:
    code, out = _register(tmp_path, _user_frame())  # default entity machine_id
    assert code == 1
    assert "entity column 'machine_id' not in the file" in out
