"""Which rows a drift-triggered run trains on (`components.steps.drift_window`, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from loopline.components.steps import SINCE_DRIFT, TRAINING_WINDOW, drift_window
from loopline.data.schema import TIMESTAMP
from loopline.types.common import Task, Trigger
from loopline.types.runs import TrainingRunSpec

END = datetime(2026, 3, 15, tzinfo=UTC)
START = END - timedelta(days=14)


def frame(rows_per_hour: int = 6) -> pd.DataFrame:
    """14 days of readings; the newest 10 hours after a recipe change (feed_rate x1.3)."""
    stamps = pd.date_range(START, END, freq=f"{60 // rows_per_hour}min", tz="UTC", inclusive="left")
    changed = stamps >= pd.Timestamp(END - timedelta(hours=10))
    return pd.DataFrame({TIMESTAMP: stamps, "feed_rate": [1.3 if c else 1.0 for c in changed]})


def spec(**extra: object) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "runId": "r",
            "namespace": "plant",
            "modelName": "drill-ae",
            "task": Task.ANOMALY_DETECTION,
            "trigger": Trigger.DRIFT,
            "featureService": "all_sensors",
            "registeredModelName": "plant.drill-ae",
            "mlflowTrackingUri": "sqlite:///m.db",
            "featureRepo": "repo",
            **extra,
        }
    )


def test_enough_rows_since_the_drift_began_are_all_the_run_sees() -> None:
    data = frame()
    began = END - timedelta(hours=10, minutes=30)  # the monitor's start: a little before
    start, rows, basis = drift_window(
        spec(driftStart=began, driftMinRows=50), START, data, TIMESTAMP
    )
    assert basis == SINCE_DRIFT
    assert start == began
    assert len(rows) == 63  # 10.5 hours at 6 an hour
    assert rows[TIMESTAMP].min() >= pd.Timestamp(began)
    # The newest fifth (what the gate evaluates on) is all new recipe; so is most of the rest.
    assert (rows["feed_rate"] == 1.3).mean() > 0.9
    assert list(rows.index) == list(range(63))


def test_too_few_rows_since_the_drift_keep_the_whole_window_and_say_why() -> None:
    data = frame()
    began = END - timedelta(hours=2)
    start, rows, basis = drift_window(
        spec(driftStart=began, driftMinRows=1000), START, data, TIMESTAMP
    )
    assert (start, len(rows)) == (START, len(data))
    assert basis.startswith(TRAINING_WINDOW)
    assert "12 rows since the drift began" in basis
    assert "fewer than driftMinRows 1000" in basis


def test_no_start_a_zero_minimum_or_a_start_before_the_window() -> None:
    data = frame()
    assert drift_window(spec(), START, data, TIMESTAMP)[2] == TRAINING_WINDOW
    off = spec(driftStart=END - timedelta(hours=10), driftMinRows=0)
    assert drift_window(off, START, data, TIMESTAMP) == (START, data, TRAINING_WINDOW)
    # A drift older than the window: the window's start bounds it (all rows, since-drift).
    old = spec(driftStart=START - timedelta(days=30), driftMinRows=10)
    start, rows, basis = drift_window(old, START, data, TIMESTAMP)
    assert (start, len(rows), basis) == (START, len(data), SINCE_DRIFT)
    # A naive start (a hand-written spec) is taken as UTC, not refused.
    naive = spec(driftStart=(END - timedelta(hours=10)).replace(tzinfo=None), driftMinRows=10)
    assert drift_window(naive, START, data, TIMESTAMP)[0] == END - timedelta(hours=10)
