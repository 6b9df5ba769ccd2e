"""Step events a training run's components append to a JSON-lines file, for whoever watches.

The local pipeline runner points `LOOPLINE_PIPELINE_PROGRESS_FILE` at a file and turns the
events into `TrainingRunResult` updates (current step, failure message, outcome), because
`kfp.local` reports a failed task only as "FAILURE" without the component's error. On a
cluster the variable is unset and reporting is a no-op; KFP's own task states serve there.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STARTED = "started"
FINISHED = "finished"
FAILED = "failed"


class PipelineSettings(BaseSettings):
    """Settings the pipeline runner hands to its component processes."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_PIPELINE_", extra="forbid")

    progress_file: Path | None = Field(
        default=None, description="JSON-lines file for step events; unset: no events written."
    )


def report(step: str, event: str, **data: Any) -> None:
    """Append one event (`started`/`finished`/`failed`) of `step` with extra fields."""
    path = PipelineSettings().progress_file
    if path is None:
        return
    record = {"time": datetime.now(UTC).isoformat(), "step": step, "event": event, **data}
    line = json.dumps(record, default=str) + "\n"
    # One write() of a short line to a file opened for appending does not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events in the file (a partly written last line is skipped)."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
