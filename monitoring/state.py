"""The monitor's state on disk: one file, replaced atomically.

Window rows, queued rows and the decision state go into a single `.npz` written to a temporary
file, fsynced and renamed over the old one, so a crash at any moment leaves either the previous
or the new state, never half of each. A decision is persisted before its retraining request is
sent; a restart finds a request not yet delivered and sends it again under the same id.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STATE_FILE = "monitor-state.npz"
FORMAT_VERSION = 1


@dataclass
class Snapshot:
    meta: dict[str, Any]
    window: np.ndarray
    queue: np.ndarray


class StateStore:
    """Reads and writes the snapshot of one monitor under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def save(self, meta: dict[str, Any], window: np.ndarray, queue: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = json.dumps({"format": FORMAT_VERSION, **meta}, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".npz", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    meta=np.array(doc),
                    window=np.asarray(window, dtype=np.float64),
                    queue=np.asarray(queue, dtype=np.float64),
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> Snapshot | None:
        """The last snapshot, or None when there is none yet."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                window, queue = data["window"], data["queue"]
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError(
                f"monitor state {self.path} is unreadable ({exc}); move it away to start fresh"
            ) from exc
        if meta.get("format") != FORMAT_VERSION:
            raise RuntimeError(
                f"monitor state {self.path} has format {meta.get('format')}, expected "
                f"{FORMAT_VERSION}; move it away to start fresh"
            )
        return Snapshot(meta=meta, window=window, queue=queue)
