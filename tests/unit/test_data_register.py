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


# What a hostile test found (issue 27, finding 7): files that cannot become features, messages
# that pointed at the wrong thing, and a refused file that still left a repository behind.


def _refused(tmp_path: Path, frame: pd.DataFrame, *args: str) -> str:
    code, out = _register(tmp_path, frame, *args)
    assert code == 1, out
    assert not (tmp_path / "repo").exists(), "a refused file must leave nothing behind"
    assert "pydantic" not in out
    assert "http" not in out
    return out


def test_all_empty_feature_is_refused_naming_it(tmp_path: Path) -> None:
    frame = _user_frame().assign(flow=[float("nan")] * 4)
    out = _refused(tmp_path, frame, *BASE, "--features", "flow,rpm")
    assert "feature column 'flow' has no values: all 4 rows are empty" in out


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinite_feature_is_refused_naming_it_and_the_count(tmp_path: Path, bad: float) -> None:
    frame = _user_frame().assign(flow=[1.0, bad, 2.0, bad])
    out = _refused(tmp_path, frame, *BASE)
    assert (
        "feature column 'flow' has 2 infinite value(s) (inf or -inf) in 4 rows (rows 2, 4)" in out
    )


def test_header_only_csv_says_it_has_no_rows(tmp_path: Path) -> None:
    out = _refused(tmp_path, _user_frame().iloc[0:0], *BASE)
    assert "the CSV has no rows" in out
    assert "numeric" not in out


def test_empty_file_says_so(tmp_path: Path) -> None:
    source = tmp_path / "mine.csv"
    source.write_text("")
    result = CliRunner().invoke(
        cli, ["data", "register", "--source", str(source), "--repo", str(tmp_path / "repo")]
    )
    assert result.exit_code == 1
    assert "the CSV is empty: no header and no rows" in result.output
    assert not (tmp_path / "repo").exists()


def test_null_entity_names_the_column_and_the_count(tmp_path: Path) -> None:
    frame = _user_frame().assign(pump=["p1", None, "p2", None])
    out = _refused(tmp_path, frame, *BASE)
    assert "entity column 'pump' has 2 null value(s) in 4 rows (rows 2, 4)" in out
    assert "dtype" not in out


def test_bad_timestamp_quotes_the_bad_value_and_its_row(tmp_path: Path) -> None:
    frame = _user_frame()
    frame.loc[2, "at"] = "yesterday"
    out = _refused(tmp_path, frame, *BASE)
    assert "timestamp column 'at' does not hold timestamps: row 3 has 'yesterday'" in out
    assert "2026-03-01T00:00:00Z'" not in out  # a valid value is not quoted as the problem


def test_unknown_core_names_the_unknown_and_the_valid_ones(tmp_path: Path) -> None:
    out = _refused(tmp_path, _user_frame(), *BASE, "--core", "flow,nope")
    assert "core sensor(s) ['nope'] are not among the features" in out
    assert "the valid ones are ['flow', 'rpm']" in out


def test_invalid_schema_file_is_one_plain_line(tmp_path: Path) -> None:
    schema = tmp_path / "my-schema.json"
    schema.write_text('{"features": [], "core": ["x"]}')
    out = _refused(tmp_path, _user_frame(), "--schema", str(schema))
    assert f"schema file {schema}: features: List should have at least 1 item" in out


def test_generate_reports_bad_options_without_a_dump(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["data", "generate", "--machines", "0", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "machines:" in result.output
    assert "http" not in result.output


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("feast apply failed")


def test_a_failure_after_the_checks_removes_what_register_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Feast failure cannot be provoked with a file that passes the checks, so `apply` is
    made to fail here; what is under test is the clean-up around it."""
    from loopline.data import features
    from loopline.data.register import register

    monkeypatch.setattr(features, "apply", _boom)
    source = tmp_path / "mine.csv"
    _user_frame().to_csv(source, index=False)
    schema = declare_schema(_user_frame(), entity="pump", timestamp="at")
    with pytest.raises(RuntimeError, match="feast apply failed"):
        register(source, tmp_path / "new-repo", schema)
    assert not (tmp_path / "new-repo").exists()
    kept = tmp_path / "old-repo"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="feast apply failed"):
        register(source, kept, schema)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("command", ["check", "reference"])
def test_check_and_reference_report_a_bad_schema_file_in_one_line(
    tmp_path: Path, command: str
) -> None:
    source = tmp_path / "mine.csv"
    _user_frame().to_csv(source, index=False)
    schema = tmp_path / "my-schema.json"
    schema.write_text('{"features": []}')
    extra = ["--out", str(tmp_path / "ref.json")] if command == "reference" else []
    result = CliRunner().invoke(
        cli, ["data", command, "--source", str(source), "--schema", str(schema), *extra]
    )
    assert result.exit_code == 1
    assert "features: List should have at least 1 item" in result.output
    assert "http" not in result.output
    assert "Traceback" not in result.output
