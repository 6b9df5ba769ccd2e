"""Compile every pipeline to its IR YAML golden file: `python -m loopline.pipelines.compile`.

`--check` compiles into a temporary folder and exits 1 if any golden file differs, which is
what the test runs: a pipeline changed without recompiling fails CI.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

from kfp import compiler

from loopline import quiet

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compile_all(out_dir: Path = COMPILED_DIR) -> list[Path]:
    from loopline.pipelines.batch import all_pipelines

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, func in sorted(all_pipelines().items()):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=func, package_path=str(path))
        written.append(path)
    return written


def stale(out_dir: Path = COMPILED_DIR) -> dict[str, str]:
    """Golden file name -> unified diff, for every golden file that does not match the code."""
    diffs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in compile_all(Path(tmp)):
            golden = out_dir / fresh.name
            old = golden.read_text().splitlines(keepends=True) if golden.is_file() else []
            new = fresh.read_text().splitlines(keepends=True)
            if old != new:
                diffs[fresh.name] = "".join(
                    difflib.unified_diff(old, new, f"golden/{fresh.name}", f"compiled/{fresh.name}")
                )
    return diffs


def main(argv: list[str] | None = None) -> int:
    quiet.apply()
    parser = argparse.ArgumentParser(prog="python -m loopline.pipelines.compile")
    parser.add_argument("--check", action="store_true", help="fail if a golden file is stale")
    args = parser.parse_args(argv)
    if args.check:
        diffs = stale()
        for name, diff in diffs.items():
            print(f"{name} is stale; run `python -m loopline.pipelines.compile`\n{diff}")
        return 1 if diffs else 0
    for path in compile_all():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
