"""Pure builders of the quality benchmark's figures, medians, targets and Markdown table.

The figures of one detector come from the metrics `evaluate_bundle` reports (a prefix per
detector, as in the run report), so the benchmark reads the product's own evaluation. On a
data set without per-entity sequences the event figures (alarm events per entity-day,
detection delay, fault events detected) are not defined and are recorded as None, never as
the zeros a one-row-per-entity debouncing would produce.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from loopline.models.alarms import row_rates
from loopline.models.evaluation_anomaly import binary

ROW_FIGURES = ("precision", "recall", "f1", "roc_auc", "far", "mar")
EVENT_FIGURES = (
    "alarm_events_per_entity_day",
    "false_alarm_events_per_entity_day",
    "fault_events_detected",
    "detection_delay_median_readings",
)
FIGURES = ROW_FIGURES + EVENT_FIGURES
# detector name in the results -> metric prefix of `evaluate_bundle`
PLANT_DETECTORS = {
    "window_ae": "",
    "dense_ae": "dense_",
    "fallback": "fallback_",
    "pca_t2_q": "pca_",
    "max_abs_z": "baseline_",
}
TABLE_COLUMNS = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("far", "FAR"),
    ("mar", "MAR"),
    ("alarm_events_per_entity_day", "alarm events / entity-day"),
    ("false_alarm_events_per_entity_day", "false alarm events / entity-day"),
    ("detection_delay_median_readings", "median delay (readings)"),
)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def figures(
    metrics: Mapping[str, float], prefix: str, *, events: bool = True
) -> dict[str, float | None]:
    """One detector's figures out of `evaluate_bundle` metrics; event figures None when
    `events` is False (no sequences in the data)."""
    out = {k: _number(metrics.get(prefix + k)) for k in ROW_FIGURES}
    out |= {k: _number(metrics.get(prefix + k)) if events else None for k in EVENT_FIGURES}
    return out


def median_figures(runs: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per figure, the median over the runs that have it (None when none has)."""
    runs = list(runs)
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out: dict[str, float | None] = {}
    for key in keys:
        values = [v for run in runs if (v := run.get(key)) is not None]
        out[key] = float(statistics.median(values)) if values else None
    return out


def at_far(y: np.ndarray, score: np.ndarray, far: float) -> dict[str, float]:
    """Row figures with the threshold placed on these rows' own normal scores so that at most
    `far` of them alarm (alarm: score > threshold): every detector judged at the same FAR.

    This is a comparison of rankings, not a deployable threshold (it looks at the labels of
    the rows it judges); the calibrated figures are what a deployment gets."""
    if not 0 <= far < 1:
        raise ValueError(f"far must be in [0, 1), got {far}")
    labels = np.asarray(y, dtype=np.int64)
    s = np.asarray(score, dtype=np.float64)
    normal = np.sort(s[labels == 0])
    if len(normal) == 0:
        raise ValueError("no normal rows to place a threshold at a false-alarm rate on")
    allowed = math.floor(far * len(normal) + 1e-9)
    cut = float(normal[len(normal) - allowed - 1])
    flag = s > cut
    found = binary("", labels, s, flag)
    rate, miss = row_rates(labels, flag)
    return {
        "precision": found["precision"],
        "recall": found["recall"],
        "f1": found["f1"],
        "far": rate,
        "mar": miss,
        "threshold": cut,
    }


def target(name: str, value: float | None, limit: float, rule: str) -> dict[str, Any]:
    """One stated target, `rule` one of "<", "<=", ">=" (value rule limit); met None when the
    value was not measured."""
    tests = {"<": lambda v: v < limit, "<=": lambda v: v <= limit, ">=": lambda v: v >= limit}
    if rule not in tests:
        raise ValueError(f"rule must be one of {sorted(tests)}, got {rule!r}")
    met = None if value is None else bool(tests[rule](value))
    return {"target": name, "value": value, "rule": rule, "limit": limit, "met": met}


def beats(name: str, ours: float | None, theirs: float | None) -> dict[str, Any]:
    """Target: `ours` strictly ahead of `theirs` (higher is better)."""
    met = None if ours is None or theirs is None else bool(ours > theirs)
    return {"target": name, "value": ours, "peer": theirs, "met": met}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(rows: Iterable[tuple[str, Mapping[str, float | None]]]) -> list[str]:
    """A Markdown table: one line per (detector name, figures)."""
    lines = [
        "| detector | " + " | ".join(label for _, label in TABLE_COLUMNS) + " |",
        "| --- " * (len(TABLE_COLUMNS) + 1) + "|",
    ]
    for name, values in rows:
        cells = [_cell(values.get(key)) for key, _ in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def pooled_delays(events: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Over labelled fault events (`evaluate_bundle`'s `faults`, pooled over runs): how many,
    the share an alarm event covered and the median delay in readings of those detected."""
    delays = [e.get("delay_readings") for e in events]
    found = [float(d) for d in delays if d is not None]
    return {
        "fault_events": float(len(delays)),
        "detected": len(found) / len(delays) if delays else None,
        "median_delay_readings": float(statistics.median(found)) if found else None,
    }
