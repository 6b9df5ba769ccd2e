"""Keep units small enough to change: flag long modules and functions that do not say why.

A module over MODULE_LINES lines, or a function over FUNCTION_LINES lines, must carry a line
starting with `Size:` in its docstring giving the reason (e.g. "Size: one table of the V2
datatypes; splitting it would scatter the mapping"). Anything else is reported, and the exit
status is 1, so `make lint` fails on a unit that grew without anyone deciding it should.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE_LINES = 450
FUNCTION_LINES = 120
PACKAGES = ("loopline", "operators", "serving", "monitoring", "pipelines", "components")
REASON = "Size:"


def _has_reason(docstring: str | None) -> bool:
    return any(line.strip().startswith(REASON) for line in (docstring or "").splitlines())


def problems(path: Path, shown: Path | None = None) -> list[str]:
    """What is too long in `path` (reported as `shown`, the path relative to the root)."""
    source = path.read_text()
    path = shown or path
    tree = ast.parse(source, filename=str(path))
    found: list[str] = []
    lines = len(source.splitlines())
    if lines > MODULE_LINES and not _has_reason(ast.get_docstring(tree)):
        found.append(f"{path}: {lines} lines (over {MODULE_LINES}) and no `{REASON}` line")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES and not _has_reason(ast.get_docstring(node)):
                found.append(
                    f"{path}:{node.lineno}: {node.name}() is {length} lines "
                    f"(over {FUNCTION_LINES}) and no `{REASON}` line"
                )
    return found


def main(root: Path) -> int:
    found = [
        problem
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        # Read from where it is; named relative to the root (which need not be the cwd).
        for problem in problems(path, path.relative_to(root))
    ]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
