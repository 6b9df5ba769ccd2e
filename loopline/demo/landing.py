"""The plant's data landing: readings the plant sent reach the offline feature store.

In a factory the readings that were scored also land in the offline store (a historian, a
lake), which is how a retraining run sees the new operating point. The demo does the same for
its feature repository: the history it generated plus every live batch the plant sent (with the
generator's ground-truth labels), rewritten atomically so a training run reading the file
concurrently sees either the old or the new version, never half a file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd

from loopline.data.features import RepoSpec, rolling_features


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


class Landing:
    """Collect live batches and write them, with the history, into the repository's sources."""

    def __init__(self, repo_dir: Path, history: pd.DataFrame) -> None:
        self.repo_dir = repo_dir
        self.spec = RepoSpec.load(repo_dir)
        self._history = history
        self._pending: list[pd.DataFrame] = []
        self._landed: list[pd.DataFrame] = []
        self._lock = threading.Lock()
        self.rows_landed = 0

    def add(self, batch: pd.DataFrame) -> None:
        with self._lock:
            self._pending.append(batch)

    def land(self) -> int:
        """Write what arrived since the last call; returns the number of new rows landed."""
        with self._lock:
            if not self._pending:
                return 0
            new, self._pending = self._pending, []
        self._landed.extend(new)
        columns = list(self._history.columns)
        frame = pd.concat([self._history, *[b[columns] for b in self._landed]], ignore_index=True)
        schema = self.spec.data_schema
        frame = frame.drop_duplicates([schema.entity, schema.timestamp], keep="last")
        frame = frame.sort_values([schema.timestamp, schema.entity], kind="stable")
        _atomic_parquet(frame, self.spec.path(self.repo_dir, self.spec.source))
        if self.spec.rolling_source:
            rolled = rolling_features(frame, schema, self.spec.rolling_windows)
            _atomic_parquet(rolled, self.spec.path(self.repo_dir, self.spec.rolling_source))
        added = sum(len(b) for b in new)
        self.rows_landed += added
        return added
