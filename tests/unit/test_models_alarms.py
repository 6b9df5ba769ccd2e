"""Alarm logic and reliability figures on hand-made sequences whose answers are counted by
hand, and fault events read from generated data against the generator's manifest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from loopline.models.alarms import (
    check_debounce,
    debounce,
    detections,
    false_alarm_events,
    row_rates,
    runs,
)
from loopline.models.reliability import event_counts, reliability
from loopline.types.alarms import AlarmPolicy


def _b(text: str) -> np.ndarray:
    """'..X.XX' -> booleans (X: over the threshold / alarming / labelled)."""
    return np.array([c == "X" for c in text], dtype=bool)


def _s(flags: np.ndarray) -> str:
    return "".join("X" if f else "." for f in flags)


@pytest.mark.parametrize(
    ("over", "k", "n", "m", "expected"),
    [
        # one noisy reading is not an alarm
        ("..X.....X...", 3, 5, 1, "............"),
        # three of five starts it; it ends when none of the last five are over
        ("..XX.X......", 3, 5, 1, ".....XXXXX.."),
        # a fault flickering around the threshold stays one event (hysteresis)
        ("XXX.X..X.X..X......", 3, 5, 1, "..XXXXXXXXXXXXXXX.."),
        # the same flicker without hysteresis (m = k) breaks into several events
        ("XXX.X..X.X..X......", 3, 5, 3, "..XXXX............."),
        # k = n = m = 1: the raw flags
        (".X.XX.", 1, 1, 1, ".X.XX."),
        # the start of a sequence: the window holds only the rows seen so far
        ("XX....", 2, 5, 1, ".XXXXX"),
    ],
)
def test_debounce_by_hand(over: str, k: int, n: int, m: int, expected: str) -> None:
    assert _s(debounce(_b(over), k, n, m)) == expected


@pytest.mark.parametrize(
    ("k", "n", "m", "message"),
    [
        (3, 0, 1, r"alarms.window \(n\) must be at least 1"),
        (6, 5, 1, r"alarms.raiseAt \(k\) must be between 1 and alarms.window \(5\), got 6"),
        (0, 5, 1, r"alarms.raiseAt \(k\) must be between 1"),
        (3, 5, 4, r"alarms.clearBelow \(m\) must be between 1 and alarms.raiseAt \(3\), got 4"),
        (3, 5, 0, r"alarms.clearBelow \(m\) must be between 1"),
    ],
)
def test_impossible_debounce_settings_are_named(k: int, n: int, m: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_debounce(k, n, m)


def test_runs_and_detections_by_hand() -> None:
    fault = _b("..XXXX....XX....XXX.")
    active = _b("XXX.......X.XXXX....")
    assert runs(fault) == [(2, 6), (10, 12), (16, 19)]
    found = detections(fault, active)
    # already alarming at the first fault's first row; the second is caught at once; the
    # third never: the alarm at 12..15 ended before it
    assert [(d.start, d.rows, d.delay) for d in found] == [(2, 4, 0), (10, 2, 0), (16, 3, None)]
    late = detections(_b("..XXXXX..."), _b(".....XXXXX"))
    assert [d.delay for d in late] == [3]
    # the event at 12..15 overlaps no labelled row; the others do
    assert false_alarm_events(fault, active) == 1


def test_far_and_mar_arithmetic() -> None:
    y = _b("....XXXX..")  # 6 normal rows, 4 fault rows
    flag = _b("X...XX...X")  # 2 alarms on normal rows, 2 fault rows missed
    far, mar = row_rates(y, flag)
    assert far == pytest.approx(2 / 6)
    assert mar == pytest.approx(2 / 4)
    assert math.isnan(row_rates(_b("...."), _b("X..."))[1])
    assert math.isnan(row_rates(_b("XX"), _b("X."))[0])


def test_reliability_counts_events_per_entity_day() -> None:
    """Two machines, one day each at one reading an hour (24 rows): entity-days = 2."""
    t = pd.date_range("2026-01-01", periods=24, freq="h", tz="UTC")
    a_fault = _b("......XXXXXX" + "." * 12)
    a_over = _b(
        ".......X.XXX" + "...X" + "." * 8
    )  # 3 of 5 over at row 10: one event, 4 readings late
    b_fault = _b("." * 24)
    b_over = _b("XXX" + "." * 9 + "X.X.X" + "." * 7)  # two false alarm events
    entity = np.array(["a"] * 24 + ["b"] * 24)
    ts = np.concatenate([t, t])
    y = np.concatenate([a_fault, b_fault]).astype(np.int64)
    over = np.concatenate([a_over, b_over])
    # shuffled rows: the function orders them per entity by time itself
    order = np.random.default_rng(0).permutation(48)
    result = reliability(
        entity[order],
        ts[order],
        y[order],
        over[order],
        AlarmPolicy(raise_at=3, window=5, clear_below=1),
        "p_",
    )
    m = result.metrics
    assert m["p_far"] == pytest.approx(((over & ~y.astype(bool)).sum()) / 42)
    assert m["p_mar"] == pytest.approx(2 / 6)  # rows 6 and 8 of a's fault
    assert m["p_alarm_events_per_entity_day"] == pytest.approx(3 / 2)
    assert m["p_false_alarm_events_per_entity_day"] == pytest.approx(2 / 2)
    assert m["p_fault_events_detected"] == 1.0
    assert m["p_detection_delay_median_readings"] == 4.0
    assert result.faults == [
        {"entity": "a", "start": t[6].isoformat(), "rows": 6, "delay_readings": 4}
    ]
    assert event_counts(entity, ts, y) == {"eval_fault_events": 1.0, "eval_entity_days": 2.0}


def test_fault_events_of_generated_data_are_the_manifest_faults() -> None:
    from loopline.data.generator import GeneratorConfig, generate

    df, manifest = generate(
        GeneratorConfig(machines=3, days=3, interval_seconds=60, seed=4, fault_fraction=0.05)
    )
    labelled = [e for e in manifest.events if e.labelled]
    assert labelled
    counts = event_counts(
        df["machine_id"].to_numpy(), df["event_timestamp"].to_numpy(), df["is_fault"].to_numpy()
    )
    assert counts["eval_fault_events"] == len(labelled)
    # a detector that is exactly the label detects every manifest fault after k - 1 readings
    result = reliability(
        df["machine_id"].to_numpy(),
        df["event_timestamp"].to_numpy(),
        df["is_fault"].to_numpy(),
        df["is_fault"].to_numpy().astype(bool),
        AlarmPolicy(raise_at=3, window=5, clear_below=1),
    )
    assert result.metrics["fault_events_detected"] == 1.0
    assert result.metrics["detection_delay_max_readings"] == 2.0
    assert result.metrics["false_alarm_events_per_entity_day"] == 0.0
    starts = sorted((e.machine_id, pd.Timestamp(e.start).isoformat()) for e in labelled)
    assert sorted((f["entity"], f["start"]) for f in result.faults) == starts


def test_the_report_table_has_one_row_per_detector_and_the_budget_column() -> None:
    from loopline.models.evaluation_anomaly import reliability_markdown

    figures = {"far": 0.02, "mar": 0.1, "f1": 0.8, "far_budget_met": 0.0}
    metrics = {
        "eval_fault_events": 3.0,
        "eval_entity_days": 2.0,
        **figures,
        **{"baseline_" + k: v for k, v in figures.items()},
    }
    assert reliability_markdown({"f1": 0.9}) == []  # a classifier's metrics: no table
    without = [line for line in reliability_markdown(metrics) if line.startswith("|")]
    assert "FAR within budget" not in without[0]  # no budget, no column
    lines = [
        line
        for line in reliability_markdown(metrics | {"max_false_alarm_rate": 0.01})
        if line.startswith("|")
    ]
    header, _, primary, baseline = lines
    cells = header.count(" | ")
    assert primary.count(" | ") == baseline.count(" | ") == cells
    assert primary.startswith("| primary (autoencoder) | n/a | n/a | 0.800 | 0.020 | 0.100 |")
    assert baseline.startswith(r"| baseline: max-\|z\| |")
    assert primary.endswith("| **no** |")
