"""`loopline pipeline`: the golden check and the gate view through the real CLI entry point."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.tracking.experiments import client_for
from loopline.tracking.gate import decide
from loopline.tracking.registry import CHAMPION, apply_decision, mark_rollout
from loopline.types.policy import ValidationPolicy


def test_compile_check_passes_on_the_committed_golden_file() -> None:
    result = CliRunner().invoke(cli, ["pipeline", "compile", "--check"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("argv", [["pipeline", "--help"], ["pipeline", "run", "--help"]])
def test_help(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_gate_shows_the_recorded_decision(training_mlflow_uri: str) -> None:
    uri = training_mlflow_uri
    client = client_for(uri)
    client.create_registered_model("ns.m")
    run = client.create_run(client.create_experiment("e"))
    version = client.create_model_version("ns.m", source="file:///x", run_id=run.info.run_id)
    client.set_registered_model_alias("ns.m", CHAMPION, str(version.version))
    decision = decide(ValidationPolicy(metric="f1"), {"f1": 0.5}, {"f1": 0.7}, champion_version="1")
    apply_decision(client, "ns.m", str(version.version), run.info.run_id, decision, "1")
    result = CliRunner().invoke(
        cli, ["pipeline", "gate", "ns.m", "--version", "1", "--tracking-uri", uri]
    )
    assert result.exit_code == 0, result.output
    assert "decision: rejected" in result.output
    assert "f1 0.5000 < champion v1 0.7000" in result.output


def test_gate_shows_how_the_rollout_ended(training_mlflow_uri: str) -> None:
    client = client_for(training_mlflow_uri)
    client.create_registered_model("ns.m")
    run = client.create_run(client.create_experiment("e"))
    client.create_model_version("ns.m", source="file:///x", run_id=run.info.run_id)
    decision = decide(ValidationPolicy(metric="f1"), {"f1": 0.9}, {}, champion_version=None)
    apply_decision(client, "ns.m", "1", run.info.run_id, decision, None, move_champion=False)
    mark_rollout(client, "ns.m", "1", "rolled_back", "error_rate 0.2 > 0.05")
    args = ["pipeline", "gate", "ns.m", "--version", "1", "--tracking-uri", training_mlflow_uri]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "decision: passed" in result.output
    assert "rollout outcome: rolled_back" in result.output
    assert "rollout reason: error_rate 0.2 > 0.05" in result.output
