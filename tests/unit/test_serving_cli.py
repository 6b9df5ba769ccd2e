"""`loopline serve settings` prints what the local backend would write; bad options are refused."""

from __future__ import annotations

import json

from click.testing import CliRunner

from loopline.cli.main import cli


def test_settings_prints_the_model_settings() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "settings",
            "--name",
            "drill-ae",
            "--model-uri",
            "models:/plant.drill-ae@champion",
            "--canary-uri",
            "models:/plant.drill-ae@challenger",
            "--canary-weight",
            "0.25",
            "--max-batch-size",
            "16",
            "--max-batch-time",
            "0.002",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["implementation"] == "loopline.serving.runtime.LooplineRuntime"
    assert doc["max_batch_size"] == 16
    assert doc["parameters"]["extra"]["canary_weight"] == 0.25


def test_canary_weight_without_canary_is_an_error() -> None:
    result = CliRunner().invoke(
        cli,
        ["serve", "settings", "--name", "drill-ae", "--model-uri", "m", "--canary-weight", "0.5"],
    )
    assert result.exit_code != 0
    assert result.exit_code == 2
    assert "canary_weight > 0 needs canary_model_uri" in result.output


def test_lean_server_with_batching_is_a_usage_error() -> None:
    args = ["serve", "settings", "--name", "drill-ae", "--model-uri", "m", "--server", "lean"]
    result = CliRunner().invoke(cli, [*args, "--max-batch-size", "8"])
    assert result.exit_code == 2
    assert "adaptive batching" in result.output
