"""Lay out the `loopline` package as it is installed, for mypy and import-linter.

The subsystem folders are mapped into `loopline` by setuptools' package-dir, so
nothing is installed under a generic top-level name; type checkers and import graph tools only understand packages as directories, so
this builds `<out>/loopline/...` from real directories and per-file symlinks to the sources.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    if out.exists():
        shutil.rmtree(out)
    # Longest prefix first so `loopline.operators` wins over `loopline` for its folder.
    for package in sorted(config["packages"], key=len):
        source = _source_dir(package, mapping)
        target = out.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.suffix in {".py", ".pyi"} or path.name == "py.typed":
                (target / path.name).symlink_to(path)


def _source_dir(package: str, mapping: dict[str, str]) -> Path:
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[cut:])
    raise SystemExit(f"{package} has no package-dir mapping in pyproject.toml")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
