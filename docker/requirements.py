"""Print the requirements of the loopline package for one image, one per line.

The image's dependency layer is installed from this list (under the lock's constraints)
before any source is copied in, so a source change rebuilds only the small layer with the
wheel. It reads pyproject.toml with the standard library only: it runs on the bare base image.

Usage: python3 docker/requirements.py [--extras a,b] [--without name,...] [pyproject.toml]
`--without` drops requirements by name and the extras of that name from the others (the
runtime image passes `torch`, so neither torch nor an `[torch]` extra is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?(.*)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(root: Path, spec: object, where: str) -> list[str]:
    if isinstance(spec, list):
        return [str(line) for line in spec]
    if isinstance(spec, dict) and "file" in spec:
        files = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
        out: list[str] = []
        for name in files:
            for raw in (root / name).read_text().splitlines():
                line = raw.split("#", 1)[0].strip()
                if line:
                    out.append(line)
        return out
    raise SystemExit(f"requirements.py: cannot read {where} in pyproject.toml")


def requirements(pyproject: Path, extras: list[str], without: set[str]) -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    root = pyproject.parent
    project = data.get("project", {})
    dynamic = data.get("tool", {}).get("setuptools", {}).get("dynamic", {})
    base = project.get("dependencies", dynamic.get("dependencies", []))
    lines = _lines(root, base, "dependencies")
    optional = project.get("optional-dependencies", dynamic.get("optional-dependencies", {}))
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise SystemExit(f"requirements.py: no extra {extra!r} (pyproject.toml has {known})")
        lines += _lines(root, optional[extra], f"optional-dependencies.{extra}")
    kept: list[str] = []
    for line in lines:
        match = _NAME.match(line)
        if match is None:
            raise SystemExit(f"requirements.py: cannot parse requirement {line!r}")
        name, brackets, rest = match.groups()
        if _normalise(name) in without:
            continue
        if brackets:
            wanted = [e.strip() for e in brackets[1:-1].split(",") if e.strip()]
            wanted = [e for e in wanted if _normalise(e) not in without]
            brackets = f"[{','.join(wanted)}]" if wanted else ""
        kept.append(f"{name}{brackets or ''}{rest}")
    return kept


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="")
    parser.add_argument("--without", default="")
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    without = {_normalise(n) for n in args.without.split(",") if n.strip()}
    for line in requirements(Path(args.pyproject), extras, without):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
