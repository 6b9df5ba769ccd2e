"""Reference statistics: what the data quality gate compares a new training set with.

Training stores them next to the model (an MLflow artifact); the gate's consistency check reads
the dtype families and its distribution check the per-feature bins. Kept apart from the gate so
a reader of either can hold it in one screen.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from loopline.data.schema import DatasetSchema

PSI_SHIFTED = 0.25  # population stability index above which a feature counts as shifted
_BINS = 10


def dtype_family(dtype: Any) -> str:
    """float | int | bool | datetime | string | other: what consistency compares."""
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "string"
    return "other"


class FeatureStats(BaseModel):
    """One feature of the reference: bins for the shift test and a few moments."""

    model_config = ConfigDict(extra="forbid")

    edges: list[float] = Field(description="Inner bin edges (deciles of the reference).")
    fractions: list[float] = Field(description="Share of non-null reference values per bin.")
    mean: float
    std: float
    null_fraction: float
    count: int


class ReferenceStats(BaseModel):
    """What the gate compares a new training set with; JSON-serialisable (an MLflow artifact)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(description="Column name -> dtype family, in order.")
    features: dict[str, FeatureStats]
    rows: int
    start: datetime | None = None
    end: datetime | None = None

    def save(self, path: Path) -> Path:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceStats:
        return cls.model_validate_json(Path(path).read_text())


def _bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def reference_stats(frame: pd.DataFrame, schema: DatasetSchema) -> ReferenceStats:
    """Summarise a reference frame (normally the previous champion's training set)."""
    feats: dict[str, FeatureStats] = {}
    for name in schema.feature_names:
        col = frame[name].to_numpy(dtype=np.float64)
        ok = col[~np.isnan(col)]
        if ok.size:
            edges = np.unique(np.quantile(ok, np.linspace(0, 1, _BINS + 1)[1:-1]))
            fractions = _bin_fractions(ok, edges)
            mean, std = float(ok.mean()), float(ok.std())
        else:
            edges, fractions, mean, std = np.array([]), np.array([1.0]), math.nan, math.nan
        feats[name] = FeatureStats(
            edges=edges.tolist(),
            fractions=fractions.tolist(),
            mean=mean,
            std=std,
            null_fraction=float(1 - ok.size / max(1, col.size)),
            count=int(col.size),
        )
    ts = frame[schema.timestamp] if schema.timestamp in frame.columns else None
    return ReferenceStats(
        columns={str(c): dtype_family(frame[c].dtype) for c in frame.columns},
        features=feats,
        rows=len(frame),
        start=ts.min().to_pydatetime() if ts is not None and len(ts) else None,
        end=ts.max().to_pydatetime() if ts is not None and len(ts) else None,
    )


def psi(reference: FeatureStats, values: np.ndarray) -> float:
    """Population stability index of `values` against the reference's bins (0 = same)."""
    ok = values[~np.isnan(values)]
    if not ok.size or not reference.fractions:
        return math.inf if ok.size == 0 else 0.0
    expected = np.asarray(reference.fractions, dtype=np.float64)
    actual = _bin_fractions(ok, np.asarray(reference.edges, dtype=np.float64))
    eps = 1e-4
    e, a = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))
