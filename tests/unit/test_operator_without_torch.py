"""The operator runs from the runtime image, which has no torch (docs/images.md): what it
imports to promote a champion (`ensure_champion` -> `loopline.tracking.champion`) must not
import torch. On the real node the first champion was never promoted because it did."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError, as in the image
import loopline.operators.runtime
import loopline.operators.backends.registry
from loopline.tracking.champion import restore_champion, score_champion
print("imported")
"""


def test_promoting_a_champion_imports_no_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "imported"
