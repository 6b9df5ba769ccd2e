from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from loopline import __version__
from loopline.cli.main import COMMANDS, cli


def test_version_prints_package_version() -> None:
    result = CliRunner().invoke(cli, ["version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"loopline {__version__}"


def test_help_lists_every_registered_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output


def test_every_registered_subcommand_imports() -> None:
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loopline.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_repo_root_platform_is_the_standard_library() -> None:
    """`platform/` holds Go code; it must never shadow the standard library's module."""
    code = "import platform, loopline.operators; print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ".".join(map(str, sys.version_info[:3]))
