"""Lineage tags: what every training run and model version records about where it came from.

Pure functions: the tags are built from the run spec and facts about the data, so the same
inputs give the same tags and a test can check that none is missing.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd

import loopline
from loopline.types.runs import TrainingRunSpec

PREFIX = "loopline."
RUN_ID = PREFIX + "run_id"
MODEL = PREFIX + "model"
NAMESPACE = PREFIX + "namespace"
TASK = PREFIX + "task"
TRIGGER = PREFIX + "trigger"
PIPELINE = PREFIX + "pipeline"
FEATURE_SERVICE = PREFIX + "feature_service"
FALLBACK_FEATURE_SERVICE = PREFIX + "fallback_feature_service"
FEATURE_VIEWS = PREFIX + "feature_views"
WINDOW_START = PREFIX + "window_start"
WINDOW_END = PREFIX + "window_end"
DATA_HASH = PREFIX + "data_hash"
DATA_ROWS = PREFIX + "data_rows"
CODE_VERSION = PREFIX + "code_version"
PARENT_VERSION = PREFIX + "parent_version"

# Set by the gate on the run and on the model version.
GATE_DECISION = PREFIX + "gate.decision"  # "passed" | "rejected" (earlier releases: "promoted")
GATE_REASON = PREFIX + "gate.reason"
GATE_METRIC = PREFIX + "gate.metric"
GATE_CHALLENGER = PREFIX + "gate.challenger_value"
GATE_CHAMPION = PREFIX + "gate.champion_value"
GATE_CHAMPION_VERSION = PREFIX + "gate.champion_version"
STEP = PREFIX + "step"  # the pipeline step that last touched the run

# Set by the Model operator on the model version when its canary ends.
ROLLOUT_OUTCOME = PREFIX + "rollout.outcome"  # "promoted" | "rolled_back" | "superseded"
ROLLOUT_REASON = PREFIX + "rollout.reason"

LINEAGE_TAGS: tuple[str, ...] = (
    RUN_ID,
    MODEL,
    NAMESPACE,
    TASK,
    TRIGGER,
    PIPELINE,
    FEATURE_SERVICE,
    FALLBACK_FEATURE_SERVICE,
    FEATURE_VIEWS,
    WINDOW_START,
    WINDOW_END,
    DATA_HASH,
    DATA_ROWS,
    CODE_VERSION,
    PARENT_VERSION,
)

NONE = "none"  # a tag value meaning "there was none" (MLflow tags cannot be null)


def dataset_hash(df: pd.DataFrame) -> str:
    """sha256 of a frame's column names and values, independent of the index.

    Two training runs with the same hash trained on the same rows, whatever produced them.
    """
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the source tree if it is a checkout (with `+dirty`), else the version."""
    here = Path(loopline.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0 and sha.stdout.strip():
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=10,
            )
            suffix = "+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
            return f"git:{sha.stdout.strip()}{suffix}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"loopline=={loopline.__version__}"


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else NONE


def lineage_tags(
    spec: TrainingRunSpec,
    *,
    data_hash: str,
    data_rows: int,
    feature_views: list[str],
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    code: str | None = None,
) -> dict[str, str]:
    """Every lineage tag of a training run; the window defaults to the spec's."""
    return {
        RUN_ID: spec.run_id,
        MODEL: spec.model_name,
        NAMESPACE: spec.namespace,
        TASK: str(spec.task),
        TRIGGER: str(spec.trigger),
        PIPELINE: spec.pipeline,
        FEATURE_SERVICE: spec.feature_service,
        FALLBACK_FEATURE_SERVICE: spec.fallback_feature_service,
        FEATURE_VIEWS: ",".join(sorted(feature_views)) or NONE,
        WINDOW_START: _iso(window_start or spec.window_start),
        WINDOW_END: _iso(window_end or spec.window_end),
        DATA_HASH: data_hash,
        DATA_ROWS: str(data_rows),
        CODE_VERSION: code or code_version(),
        PARENT_VERSION: spec.parent_version or NONE,
    }


def missing_lineage(tags: dict[str, str]) -> list[str]:
    """Lineage tag names absent or empty in `tags` (a check for tests and `loopline` tools)."""
    return [t for t in LINEAGE_TAGS if not tags.get(t)]
