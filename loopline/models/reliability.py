"""What a reliability engineer reads about a detector on a labelled evaluation set.

Per row: false-alarm rate (FAR, alarms on normal rows / normal rows) and missed-alarm rate
(MAR, unflagged fault rows / fault rows). Per entity, after k-of-n debouncing
(`loopline.models.alarms`): alarm events per entity-day (all of them, and the false ones that
overlap no labelled row), and for every labelled fault event whether an alarm event covered
it and after how many readings.

Entity-days: per entity, the time its evaluation rows span plus one typical reading interval
(so a day of minute readings is one day, not 23 h 59 min). The evaluation set is the newest
part of each label value's rows, so an entity's sequence may have a gap; debouncing runs over
the rows in time order as they are, which is what a serving replica would have seen of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopline.models.alarms import debounce, detections, false_alarm_events, row_rates, runs
from loopline.types.alarms import AlarmPolicy

DAY_SECONDS = 86400.0


@dataclass
class Reliability:
    metrics: dict[str, float]
    faults: list[dict[str, Any]] = field(default_factory=list)  # one per labelled fault event


def _nanoseconds(timestamp: np.ndarray) -> np.ndarray:
    """Timestamps as UTC nanoseconds (naive ones are taken as UTC)."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(timestamp, utc=True)).asi8)


def _entity_days(ns: np.ndarray) -> float:
    if len(ns) == 0:
        return 0.0
    seconds = ns / 1e9
    steps = np.diff(seconds)
    interval = float(np.median(steps)) if len(steps) else 0.0
    return (float(seconds[-1] - seconds[0]) + interval) / DAY_SECONDS


def reliability(
    entity: np.ndarray,
    timestamp: np.ndarray,
    y: np.ndarray,
    over: np.ndarray,
    settings: AlarmPolicy,
    prefix: str = "",
) -> Reliability:
    """Row rates, alarm events and detection delays of one detector's `over` flags, and with
    a false-alarm budget in `settings`, whether the row rate met it (`far_budget_met`, 1/0)."""
    far, mar = row_rates(y, over)
    frame = pd.DataFrame(
        {"entity": entity, "ts": _nanoseconds(timestamp), "y": y.astype(bool), "over": over}
    )
    frame = frame.sort_values(["entity", "ts"], kind="stable")
    days = events = false_events = 0.0
    delays: list[int] = []
    faults: list[dict[str, Any]] = []
    for name, rows in frame.groupby("entity", sort=True):
        ts = rows["ts"].to_numpy()
        labels = rows["y"].to_numpy()
        active = debounce(
            rows["over"].to_numpy(), settings.raise_at, settings.window, settings.clear_below
        )
        days += _entity_days(ts)
        events += len(runs(active))
        false_events += false_alarm_events(labels, active)
        for d in detections(labels, active):
            faults.append(
                {
                    "entity": str(name),
                    "start": pd.Timestamp(int(ts[d.start]), tz="UTC").isoformat(),
                    "rows": d.rows,
                    "delay_readings": d.delay,
                }
            )
            if d.delay is not None:
                delays.append(d.delay)
    per_day = (lambda v: v / days) if days > 0 else (lambda v: math.nan)
    detected = len(delays) / len(faults) if faults else math.nan
    metrics = {
        f"{prefix}far": far,
        f"{prefix}mar": mar,
        f"{prefix}alarm_events_per_entity_day": per_day(events),
        f"{prefix}false_alarm_events_per_entity_day": per_day(false_events),
        f"{prefix}fault_events_detected": detected,
        f"{prefix}detection_delay_median_readings": float(np.median(delays))
        if delays
        else math.nan,
        f"{prefix}detection_delay_max_readings": float(max(delays)) if delays else math.nan,
    }
    budget = settings.max_false_alarm_rate
    if budget is not None and not math.isnan(far):
        metrics[f"{prefix}far_budget_met"] = float(far <= budget)
    return Reliability(metrics=metrics, faults=faults)


def event_counts(entity: np.ndarray, timestamp: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How many labelled fault events and entity-days the evaluation set holds."""
    frame = pd.DataFrame({"entity": entity, "ts": _nanoseconds(timestamp), "y": y.astype(bool)})
    frame = frame.sort_values(["entity", "ts"], kind="stable")
    days = faults = 0.0
    for _, rows in frame.groupby("entity", sort=True):
        days += _entity_days(rows["ts"].to_numpy())
        faults += len(runs(rows["y"].to_numpy()))
    return {"eval_fault_events": faults, "eval_entity_days": days}
