"""The bounded queue in front of the detector and the sliding window it tests.

The queue is the only thing the HTTP handler touches: appending is O(1) under a lock, and when
the detector falls behind the OLDEST rows are dropped (and counted), so a model server posting
samples is never slowed down by drift testing. The window belongs to the one worker thread.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class SampleQueue:
    """Rows waiting to be tested, at most `capacity` of them; overflow drops the oldest."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1 row, got {capacity}")
        self.capacity = capacity
        self.width = width
        self._chunks: deque[np.ndarray] = deque()
        self._rows = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._rows

    def put(self, rows: np.ndarray) -> int:
        """Append rows; return how many (old or new) rows were dropped to stay bounded."""
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows must have shape [n, {self.width}], got {list(rows.shape)}")
        if rows.shape[0] == 0:
            return 0
        dropped = 0
        with self._lock:
            if rows.shape[0] > self.capacity:
                dropped += rows.shape[0] - self.capacity
                rows = rows[-self.capacity :]
            self._chunks.append(rows)
            self._rows += rows.shape[0]
            while self._rows > self.capacity:
                excess = self._rows - self.capacity
                head = self._chunks[0]
                if head.shape[0] <= excess:
                    self._chunks.popleft()
                    self._rows -= head.shape[0]
                    dropped += head.shape[0]
                else:
                    self._chunks[0] = head[excess:]
                    self._rows -= excess
                    dropped += excess
        return dropped

    def take(self, max_rows: int) -> np.ndarray:
        """Remove and return up to `max_rows` of the oldest rows."""
        out: list[np.ndarray] = []
        need = max_rows
        with self._lock:
            while need > 0 and self._chunks:
                head = self._chunks[0]
                if head.shape[0] <= need:
                    out.append(self._chunks.popleft())
                    need -= head.shape[0]
                else:
                    out.append(head[:need])
                    self._chunks[0] = head[need:]
                    need = 0
            self._rows -= max_rows - need
        if not out:
            return np.empty((0, self.width), dtype=np.float64)
        return np.concatenate(out, axis=0)

    def snapshot(self) -> np.ndarray:
        """A copy of every queued row (for persisting), oldest first."""
        with self._lock:
            if not self._chunks:
                return np.empty((0, self.width), dtype=np.float64)
            return np.concatenate(list(self._chunks), axis=0)


class SlidingWindow:
    """The last `size` rows; ready to test every `step` new rows once it is full.

    Each row keeps the time it entered the window, so a drifted window can say since when its
    data has been arriving: the start of a drift, which a retraining run trains from."""

    def __init__(
        self,
        size: int,
        step: int,
        width: int,
        rows: np.ndarray | None = None,
        arrivals: np.ndarray | None = None,
    ) -> None:
        if not 1 <= step <= size:
            raise ValueError(f"window step must be in 1..{size}, got {step}")
        self.size = size
        self.step = step
        self.width = width
        self.rows = np.empty((0, width), dtype=np.float64) if rows is None else rows[-size:]
        # Restored rows keep their saved arrival times; without them the times are unknown (NaN).
        n = self.rows.shape[0]
        known = arrivals is not None and len(arrivals) >= n
        self.arrivals = (
            np.asarray(arrivals, dtype=np.float64)[-n:] if known and n else np.full(n, np.nan)
        )
        self.since_test = 0
        self.rows_seen = 0

    @property
    def full(self) -> bool:
        return self.rows.shape[0] >= self.size

    def room(self) -> int:
        """Rows to add before the next test is due (so a test sees exactly its window)."""
        if not self.full:
            return self.size - self.rows.shape[0]
        return max(1, self.step - self.since_test)

    def add(self, rows: np.ndarray, now: float = float("nan")) -> None:
        """Append rows that arrived at `now` (wall-clock seconds)."""
        self.rows = np.concatenate([self.rows, rows], axis=0)[-self.size :]
        stamps = np.full(rows.shape[0], now, dtype=np.float64)
        self.arrivals = np.concatenate([self.arrivals, stamps])[-self.size :]
        self.since_test += rows.shape[0]
        self.rows_seen += rows.shape[0]

    def shift_arrival(self, column: int) -> float | None:
        """When the rows after the most likely shift in `column` began arriving, if known."""
        if self.rows.shape[0] < 2:
            return self.oldest_arrival()
        at = float(self.arrivals[change_point(self.rows[:, column])])
        return None if np.isnan(at) else at

    def oldest_arrival(self) -> float | None:
        """When the window's oldest row arrived, if known."""
        if self.arrivals.shape[0] == 0 or np.isnan(self.arrivals[0]):
            return None
        return float(self.arrivals[0])

    def due(self) -> bool:
        return self.full and self.since_test >= self.step

    def mark_tested(self) -> None:
        self.since_test = 0


def change_point(values: np.ndarray) -> int:
    """Index of the first row after the most likely single shift of the mean in `values`.

    The CUSUM estimator: the k that maximises |sum of (x_i - mean) over i < k|. For a step
    change it lands on the step; it needs no threshold because the caller already knows the
    window drifted. Missing values count as the mean (they move the sum neither way)."""
    x = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(x)
    if present.sum() < 2:
        return 0
    centred = np.where(present, x - x[present].mean(), 0.0)
    sums = np.abs(np.cumsum(centred))[:-1]
    if not sums.any():
        return 0  # no shift at all
    return int(np.argmax(sums)) + 1
