"""pyproject.toml lists every package of the source tree, and nothing else.

setuptools installs only the packages `[tool.setuptools] packages` names: a sub-package left out
works from the checkout (and in every test that imports from it) but is missing from the wheel,
so the image build's `loopline --help` (or the first pod) fails on the import. An image build
once failed exactly so, on `loopline.cluster.node`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
_SKIP = {"__pycache__", "build", "dist"}


def _setuptools() -> dict[str, Any]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return dict(data["tool"]["setuptools"])


def _packages_on_disk() -> dict[str, Path]:
    """Every folder with an __init__.py under the package-dir roots, by its import name."""
    package_dir = dict(_setuptools()["package-dir"])
    found: dict[str, Path] = {}
    for name, folder in package_dir.items():
        root = REPO_ROOT / str(folder)
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if any(part in _SKIP or part.endswith(".egg-info") for part in rel.parts):
                continue
            found[".".join([name, *rel.parts])] = init.parent
    return found


def test_every_package_folder_is_listed() -> None:
    listed = set(_setuptools()["packages"])
    missing = sorted(set(_packages_on_disk()) - listed)
    assert not missing, (
        f"pyproject.toml [tool.setuptools] packages lacks {missing}: the wheel (and every "
        "image) would be built without them"
    )


def test_every_listed_package_exists() -> None:
    listed = set(_setuptools()["packages"])
    extra = sorted(listed - set(_packages_on_disk()))
    assert not extra, f"pyproject.toml lists {extra}, which have no __init__.py"


def test_the_scan_sees_nested_packages() -> None:
    """The scan itself reaches sub-packages of sub-packages and the mapped folders."""
    found = _packages_on_disk()
    assert found["loopline.cluster.node"] == REPO_ROOT / "loopline" / "cluster" / "node"
    assert found["loopline.operators.backends"] == REPO_ROOT / "operators" / "backends"
