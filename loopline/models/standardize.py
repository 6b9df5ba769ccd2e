"""Per-feature standardisation fitted on normal training rows and stored inside the bundle.

The scaler travels with the network (not with the serving code), so a model version always
scores with the statistics it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# A sensor that never moved in training (stuck value) would divide by zero; this floor keeps
# it finite and makes any later movement of that sensor large, which is what we want to see.
MIN_SCALE = 1e-6


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray  # float32 [F]
    scale: np.ndarray  # float32 [F]

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Mean and standard deviation per column, ignoring NaN readings."""
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need a 2-D array with at least 2 rows to fit, got shape {x.shape}")
        mean = np.nanmean(x, axis=0).astype(np.float32)
        scale = np.nanstd(x, axis=0).astype(np.float32)
        bad = ~np.isfinite(mean)
        if bad.any():
            raise ValueError(f"columns {np.flatnonzero(bad).tolist()} have no finite values")
        return cls(mean=mean, scale=np.maximum(scale, MIN_SCALE).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = (x - self.mean) / self.scale
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float32),
            scale=np.asarray(data["scale"], dtype=np.float32),
        )
