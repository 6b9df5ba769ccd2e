"""Which training rows calibrate the per-entity score baseline, and its calibration per
detector (`loopline.models.score_baseline`), from a training window's frame.

The held-out rows are the newest fifth of each entity's normal rows, not a random fifth: the
baseline's relative threshold is about what comes next for a machine, and the newest rows of
the training window are the closest the training run has to that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from loopline.models.score_baseline import BaselineCalibration, calibrate
from loopline.types.alarms import AlarmPolicy
from loopline.types.dataset import DatasetRoles

# a detector's score function and its threshold
Detector = tuple[Callable[[np.ndarray], np.ndarray], float]


def _order(df: pd.DataFrame, roles: DatasetRoles) -> None:
    missing = [c for c in (roles.entity, roles.timestamp) if c not in df.columns]
    if missing:
        raise ValueError(
            f"alarms.baselineReadings needs the entity and timestamp columns {missing} to "
            "follow each entity's readings in time order"
        )


def newest_per_entity(rows: pd.DataFrame, roles: DatasetRoles, fraction: float) -> np.ndarray:
    """Mask (in the order of `rows`) of the newest `fraction` of each entity's rows by
    timestamp, at least its newest one."""
    _order(rows, roles)
    frame = pd.DataFrame(
        {
            "entity": rows[roles.entity].to_numpy(),
            "ts": rows[roles.timestamp].to_numpy(),
            "pos": np.arange(len(rows)),
        }
    ).sort_values(["entity", "ts"], kind="stable")
    newest_rank = frame.groupby("entity", sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby("entity", sort=False)["pos"].transform("size").to_numpy()
    held = np.zeros(len(rows), dtype=bool)
    held[frame["pos"].to_numpy()] = newest_rank < np.maximum(1, (size * fraction).astype(int))
    return held


def calibrate_rows(
    df: pd.DataFrame,
    names: list[str],
    roles: DatasetRoles,
    held_out: pd.Index,
    alarms: AlarmPolicy,
    quantile: float,
    detectors: dict[str, Detector],
) -> dict[str, BaselineCalibration]:
    """Per detector, the baseline calibration over every row of `df` with all of `names`,
    in time order per entity (fault rows included: serving cannot leave them out of the
    history either); `held_out` (index labels of `df`) are the rows the threshold is set on."""
    readings = alarms.baseline_readings
    if readings is None:
        return {}
    _order(df, roles)
    rows = df[df[names].notna().all(axis=1)].sort_values(
        [roles.entity, roles.timestamp], kind="stable"
    )
    x = rows[names].to_numpy(dtype=np.float32)
    held = rows.index.isin(held_out)
    entities = rows[roles.entity].to_numpy()
    out: dict[str, BaselineCalibration] = {}
    for key, (score, threshold) in detectors.items():
        if not threshold > 0:
            raise ValueError(f"detector {key or 'primary'!r} has threshold {threshold}")
        u = np.asarray(score(x), dtype=np.float64) / threshold
        out[key] = calibrate(entities, u, held, readings, quantile, alarms.max_false_alarm_rate)
    return out
