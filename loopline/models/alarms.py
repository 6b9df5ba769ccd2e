"""Alarm logic on top of a per-row score, as a line operator sees it: pure sequence functions.

A row over the threshold is not yet an alarm. Per entity, in time order, an alarm *event*
starts when at least `k` of the last `n` rows are over the threshold (a single noisy reading
is not an alarm) and ends, with hysteresis, when fewer than `m` of the last `n` are (m <= k:
a fault whose rows flicker around the threshold stays one event instead of many). The
window at the start of a sequence holds only the rows seen so far.

Fault events are the runs of consecutive labelled rows of an entity: the generator labels
every row of a fault it injects (its manifest lists the same faults), and a user's data set
labels its anomalies the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def check_debounce(k: int, n: int, m: int) -> None:
    """Refuse settings that cannot work; the message names the field."""
    if n < 1:
        raise ValueError(f"alarms.window (n) must be at least 1, got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"alarms.raiseAt (k) must be between 1 and alarms.window ({n}), got {k}")
    if not 1 <= m <= k:
        raise ValueError(
            f"alarms.clearBelow (m) must be between 1 and alarms.raiseAt ({k}), got {m}"
        )


def debounce(over: np.ndarray, k: int, n: int, m: int) -> np.ndarray:
    """Alarm state per row of one entity's time-ordered `over` flags (k-of-n on, < m off)."""
    check_debounce(k, n, m)
    flags = np.asarray(over, dtype=bool)
    counts = np.convolve(flags.astype(np.int64), np.ones(n, dtype=np.int64))[: len(flags)]
    active = np.zeros(len(flags), dtype=bool)
    on = False
    for i, count in enumerate(counts.tolist()):
        on = count >= m if on else count >= k
        active[i] = on
    return active


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True, end exclusive."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


@dataclass(frozen=True)
class FaultDetection:
    """One labelled fault event and whether (and how late) an alarm event covered it."""

    start: int  # index of the fault's first row in the entity's sequence
    rows: int
    delay: int | None  # readings from the fault's first row to the first alarming row; None: missed


def detections(fault: np.ndarray, active: np.ndarray) -> list[FaultDetection]:
    """Per fault event (run of `fault`), the delay until `active` within it.

    An alarm already on when the fault begins detects it with delay 0; one that starts only
    after the fault's last row does not detect it."""
    out: list[FaultDetection] = []
    alarm = np.asarray(active, dtype=bool)
    for start, end in runs(fault):
        hits = np.flatnonzero(alarm[start:end])
        delay = int(hits[0]) if len(hits) else None
        out.append(FaultDetection(start=start, rows=end - start, delay=delay))
    return out


def false_alarm_events(fault: np.ndarray, active: np.ndarray) -> int:
    """Alarm events that overlap no labelled row."""
    labels = np.asarray(fault, dtype=bool)
    return sum(1 for s, e in runs(active) if not labels[s:e].any())


def row_rates(y: np.ndarray, flag: np.ndarray) -> tuple[float, float]:
    """(FAR, MAR) per row: alarms on normal rows / normal rows, misses on fault rows / fault
    rows. NaN where there is no row of that kind."""
    labels = np.asarray(y, dtype=bool)
    alarms = np.asarray(flag, dtype=bool)
    normal, faults = int((~labels).sum()), int(labels.sum())
    far = float((alarms & ~labels).sum() / normal) if normal else math.nan
    mar = float((~alarms & labels).sum() / faults) if faults else math.nan
    return far, mar
