"""`loopline monitor`: bad settings are usage errors that name the field."""

from __future__ import annotations

from click.testing import CliRunner

from loopline.cli.main import cli


def test_unknown_setting_lists_the_known_ones() -> None:
    result = CliRunner().invoke(cli, ["monitor", "serve", "--model", "x", "--set", "bogus=1"])
    assert result.exit_code == 2
    assert "'bogus=1'" in result.output
    assert "window_size" in result.output


def test_invalid_value_names_the_field() -> None:
    result = CliRunner().invoke(
        cli,
        ["monitor", "serve", "--model", "x", "--set", "window_size=10", "--set", "requester=log"],
    )
    assert result.exit_code == 2
    assert "window_size" in result.output
    assert "greater than or equal to 20" in result.output
