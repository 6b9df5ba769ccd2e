"""`loopline cluster` commands that need no running cluster."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from loopline.cli.main import cli


def test_status_of_an_empty_state_dir_is_stopped(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "status", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "stopped" in result.output


def test_kubeconfig_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "kubeconfig", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "loopline cluster up" in result.output


def test_down_without_a_cluster_is_harmless(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "down", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "No cluster was running" in result.output


def test_down_refuses_to_delete_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(cli, ["cluster", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "refusing to delete" in result.output
    assert (tmp_path / "thesis.tex").exists()


def test_up_refuses_cluster_data_without_a_state_file_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    """Without state.json `up` cannot restart what is there; it used to delete it."""
    state_dir = tmp_path / "s"
    (state_dir / "etcd" / "member").mkdir(parents=True)
    (state_dir / "pki").mkdir()
    (state_dir / "pki" / "ca.crt").write_text("the CA every kubeconfig trusts")
    args = ["--state-dir", str(state_dir)]
    status = CliRunner().invoke(cli, ["cluster", "status", *args])
    assert status.exit_code == 1
    assert "no readable state.json" in status.output
    up = CliRunner().invoke(cli, ["cluster", "up", "--no-build", *args])
    assert up.exit_code == 1
    assert "`loopline cluster up --reset` deletes it" in up.output
    assert (state_dir / "etcd" / "member").is_dir()
    assert (state_dir / "pki" / "ca.crt").read_text() == "the CA every kubeconfig trusts"
