"""The statistical baseline every report compares the neural model with.

Per-feature mean/std ranges fitted on training data: for anomaly detection the score of a row
is its largest absolute z-score (how far outside its normal range the worst sensor is), with a
threshold calibrated like the autoencoder's; for classification a row gets the class whose
per-feature ranges it sits closest to (sum of squared z-scores). If the network cannot beat
this, it is not earning its keep, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.models.calibration import threshold
from loopline.models.standardize import Standardizer


@dataclass(frozen=True)
class RangeBaseline:
    """Anomaly baseline: max |z| over features against the normal rows' mean/std."""

    ranges: Standardizer
    threshold: float

    @classmethod
    def fit(
        cls,
        normal: np.ndarray,
        calibration: np.ndarray,
        quantile: float,
        max_false_alarm_rate: float | None = None,
    ) -> RangeBaseline:
        """Ranges of `normal`; the threshold from `calibration` as the autoencoder's is."""
        ranges = Standardizer.fit(normal)
        score = np.abs(ranges.transform(calibration)).max(axis=1)
        return cls(ranges=ranges, threshold=threshold(score, quantile, max_false_alarm_rate))

    def score(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.abs(self.ranges.transform(x)).max(axis=1)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "range", "ranges": self.ranges.to_dict(), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeBaseline:
        return cls(
            ranges=Standardizer.from_dict(data["ranges"]), threshold=float(data["threshold"])
        )


@dataclass(frozen=True)
class ClassRangeBaseline:
    """Classification baseline: nearest class by per-class, per-feature mean/std ranges."""

    per_class: list[Standardizer | None]  # None for a class absent from training

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int) -> ClassRangeBaseline:
        out: list[Standardizer | None] = []
        for k in range(n_classes):
            rows = x[y == k]
            out.append(Standardizer.fit(rows) if len(rows) >= 2 else None)
        return cls(per_class=out)

    def predict(self, x: np.ndarray) -> np.ndarray:
        dist = np.full((x.shape[0], len(self.per_class)), np.inf, dtype=np.float64)
        for k, ranges in enumerate(self.per_class):
            if ranges is not None:
                dist[:, k] = (ranges.transform(x).astype(np.float64) ** 2).sum(axis=1)
        out: np.ndarray = dist.argmin(axis=1).astype(np.int64)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "class_range",
            "per_class": [None if r is None else r.to_dict() for r in self.per_class],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassRangeBaseline:
        return cls(
            per_class=[None if r is None else Standardizer.from_dict(r) for r in data["per_class"]]
        )
