"""Per-entity score baseline: a reading alarms when it stands out from its own machine's
recent readings, not only from the training window's.

Why: on the generated plant the false alarm events of the newest readings come from wear, not
from noise. A machine that keeps wearing past the levels the training window saw raises its
normal reconstruction error for days (its median normal score climbs from a quarter of the
threshold to three quarters on the last day), and the noise on top of that level then crosses
a fixed threshold in clusters that k-of-n debouncing turns into events (docs/training.md,
"Where the false alarm events come from"). Judging each score against the median of the same
entity's previous `readings` scores follows that slow level while a fault, shorter than half
the window, cannot move the median much.

The score is taken in units of its detector's threshold (u = score / threshold), so rows that
different detectors scored (a window detector's first readings, fallback rows) share one
history. The relative score is u / median of the entity's previous `readings` values of u;
with fewer than half of them seen, the median of u over the calibration's normal readings
(`reference`) stands in. A row counts towards an alarm when its relative score is over the
calibrated relative threshold. The same class serves the evaluation (a whole sequence at a
time, `relative_scores`) and the model server (one reading at a time), so both judge alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.models.calibration import threshold

BASELINE_KEY = "alarm_baseline"  # bundle metadata: readings and, per detector, the calibration
_FLOOR = 1e-9  # a history of zero scores would divide by zero


@dataclass(frozen=True)
class BaselineCalibration:
    """One detector's calibration: the reference level and the relative threshold."""

    reference: float  # median of u over held-out normal readings
    threshold: float  # relative score above which a reading counts towards an alarm

    def to_dict(self) -> dict[str, float]:
        return {"reference": self.reference, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineCalibration:
        return cls(reference=float(data["reference"]), threshold=float(data["threshold"]))


class EntityBaseline:
    """One entity's last `readings` values of u: a ring buffer in arrival order and the same
    values kept sorted for the median (two float64 arrays, 16 bytes a reading)."""

    def __init__(self, readings: int, reference: float) -> None:
        if readings < 2:
            raise ValueError(f"alarms.baselineReadings must be at least 2, got {readings}")
        self.readings = readings
        self.reference = reference
        self._ring = np.empty(readings, dtype=np.float64)
        self._sorted = np.empty(readings, dtype=np.float64)
        self._count = 0  # values held
        self._next = 0  # ring position the next value goes to

    def median(self) -> float:
        """The median of the history, or `reference` while it holds under half a window."""
        n = self._count
        if n < self.readings // 2:
            return self.reference
        mid = n // 2
        if n % 2:
            return float(self._sorted[mid])
        return float(0.5 * (self._sorted[mid - 1] + self._sorted[mid]))

    def relative(self, u: float) -> float:
        """u against the history before it; then u joins the history. A missing u (NaN) is
        judged as NaN and left out of the history."""
        out = u / max(self.median(), _FLOOR)
        if not math.isnan(u):
            n, values = self._count, self._sorted
            if n == self.readings:  # the oldest value leaves
                old = int(np.searchsorted(values[:n], self._ring[self._next]))
                values[old : n - 1] = values[old + 1 : n]
                n -= 1
            at = int(np.searchsorted(values[:n], u))
            values[at + 1 : n + 1] = values[at:n]
            values[at] = u
            self._count = n + 1
            self._ring[self._next] = u
            self._next = (self._next + 1) % self.readings
        return out


def relative_scores(
    entities: Sequence[Any] | np.ndarray, u: np.ndarray, readings: int, reference: float
) -> np.ndarray:
    """Relative score of every row; rows in time order within each entity."""
    state: dict[Any, EntityBaseline] = {}
    out = np.empty(len(u), dtype=np.float64)
    for i, (key, value) in enumerate(zip(entities, np.asarray(u, dtype=np.float64), strict=True)):
        found = state.get(key)
        if found is None:
            found = state[key] = EntityBaseline(readings, reference)
        out[i] = found.relative(float(value))
    return out


def calibrate(
    entities: Sequence[Any] | np.ndarray,
    u: np.ndarray,
    held_out: np.ndarray,
    readings: int,
    quantile: float,
    max_false_alarm_rate: float | None,
) -> BaselineCalibration:
    """The reference and relative threshold from every row of the training window in time
    order (`u`, the history each row would have had in serving) and the held-out normal rows
    among them (`held_out`), with the same quantile or false-alarm budget as a threshold."""
    mask = np.asarray(held_out, dtype=bool)
    values = np.asarray(u, dtype=np.float64)
    if not mask.any():
        raise ValueError("no held-out normal readings to calibrate the score baseline on")
    reference = float(np.nanmedian(values[mask]))
    rel = relative_scores(entities, values, readings, reference)[mask]
    rel = rel[np.isfinite(rel)]
    return BaselineCalibration(reference, threshold(rel, quantile, max_false_alarm_rate))
