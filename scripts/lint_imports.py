"""Run import-linter on the laid-out package tree (see typecheck_tree.py).

The editable install's import hook, and the repository root on `sys.path` (import-linter adds
the working directory), would both hand grimp the `loopline/` folder alone, without the mapped
subsystem folders; so this runs from inside the tree with the hook removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

config = Path("pyproject.toml").resolve()
tree = Path(sys.argv[1]).resolve()
sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith("__editable__")]
sys.path[:] = [str(tree)] + [p for p in sys.path if p not in ("", os.getcwd())]
os.chdir(tree)
for name in [m for m in sys.modules if m == "loopline" or m.startswith("loopline.")]:
    del sys.modules[name]

from importlinter.cli import lint_imports  # noqa: E402

sys.exit(lint_imports(config_filename=str(config), no_cache=True))
