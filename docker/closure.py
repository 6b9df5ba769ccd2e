"""What a second `pip install` added to a venv, moved out into a tree of its own.

The training image's torch layer is the training extra's closure over the runtime
requirements (docker/torch-layer.Dockerfile). It is computed here, on the bare base image
(standard library only), from the venv itself rather than from a list of package names:

  closure.py clean VENV                  drop byte code and the dependencies' test suites
  closure.py snapshot VENV BEFORE.json   record every file (and symlink) with its digest
  closure.py collect VENV BEFORE.json OUT
                                         move the files that are new or changed since the
                                         snapshot to OUT/<same absolute path>; fail if any
                                         file of the snapshot is gone (a layer on top of the
                                         runtime image cannot remove it)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path


def clean(venv: Path) -> None:
    for cache in sorted(venv.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for top in site.iterdir():
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink() and path.name in {"tests", "test"}:
                shutil.rmtree(path, ignore_errors=True)


def _entry(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stat().st_mode & 0o7777:o}:{digest.hexdigest()}"


def snapshot(venv: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for root, dirs, names in os.walk(venv):
        for name in names + [d for d in dirs if (Path(root) / d).is_symlink()]:
            path = Path(root) / name
            files[str(path)] = _entry(path)
    return files


def collect(venv: Path, before: dict[str, str], out: Path) -> None:
    after = snapshot(venv)
    gone = sorted(set(before) - set(after))
    if gone:
        sys.exit(f"closure.py: the second install removed {len(gone)} files, e.g. {gone[:5]}")
    new = sorted(p for p in after if p not in before)
    changed = sorted(p for p in after if p in before and before[p] != after[p])
    for name in new + changed:
        source = Path(name)
        target = out / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in before:  # changed: copied, so the venv below keeps its own
            shutil.copy2(source, target, follow_symlinks=False)
        else:
            os.replace(source, target)
    size = sum((out / Path(p).relative_to("/")).lstat().st_size for p in new + changed)
    print(f"closure: {len(new)} new files, {len(changed)} changed, {size / 1e9:.2f} GB")
    for name in changed:
        print(f"  changed: {name}")


def main(argv: list[str]) -> int:
    command, venv = argv[0], Path(argv[1])
    if command == "clean":
        clean(venv)
    elif command == "snapshot":
        Path(argv[2]).write_text(json.dumps(snapshot(venv)))
    elif command == "collect":
        collect(venv, json.loads(Path(argv[2]).read_text()), Path(argv[3]))
    else:
        sys.exit(f"closure.py: unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
