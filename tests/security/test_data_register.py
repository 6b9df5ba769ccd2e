"""What a hostile probe of `loopline data register` found, reproduced: it accepted all-empty
and infinite features, left an empty `repo/data/` behind when it failed, pointed three messages
at the wrong thing and printed pydantic's dump. Each case now fails before Feast is touched,
naming the column, the count and the rows, and leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.data.register import declare_schema
from tests.unit.test_data_register import BASE, _register, _user_frame


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
    schema.write_text('{"entity": "pump", "timestamp": "at", "features": [], "core": ["x"]}')
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
    schema = declare_schema(_user_frame(), entity="pump", timestamp="at", label="state")
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
