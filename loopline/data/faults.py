"""The events a generated history carries: labelled machine faults (what the models learn to
see) and unlabelled sensor faults (data problems: NaN runs, stuck values, spikes), injected into
the readings along a timeline and listed, each one, in the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from loopline.data.schema import CORE_SENSORS, ENTITY, FAULT_TYPE, FAULT_TYPES, IS_FAULT, SENSORS

if TYPE_CHECKING:
    import pandas as pd

    from loopline.data.generator import GeneratorConfig

LABELLED_FAULTS: tuple[str, ...] = tuple(f for f in FAULT_TYPES if f != "none")
SENSOR_FAULTS: tuple[str, ...] = ("nan_run", "stuck", "spike")
SIDX = {name: i for i, name in enumerate(SENSORS)}

EventKind = Literal[
    "recipe_change",
    "part_replacement",
    "bearing_wear",
    "tool_breakage",
    "coolant_loss",
    "nan_run",
    "stuck",
    "spike",
]

# Labelled faults: sensor -> ("mul" | "add", effect at full severity); duration range in minutes.
_FAULT_EFFECTS: dict[str, dict[str, tuple[str, float]]] = {
    "bearing_wear": {
        "spindle_vibration_rms": ("mul", 2.5),
        "axial_vibration": ("mul", 1.8),
        "acoustic_level": ("add", 8.0),
        "motor_temperature": ("add", 6.0),
        "spindle_current": ("mul", 1.12),
        "power_factor": ("add", -0.04),
    },
    "tool_breakage": {
        "spindle_torque": ("mul", 0.35),
        "spindle_current": ("mul", 0.55),
        "spindle_vibration_rms": ("mul", 1.6),
        "axial_vibration": ("mul", 0.4),
        "acoustic_level": ("add", 10.0),
        "power_factor": ("add", -0.15),
    },
    "coolant_loss": {
        "coolant_flow": ("mul", 0.2),
        "chamber_pressure": ("mul", 0.15),
        "coolant_temperature": ("add", 18.0),
        "motor_temperature": ("add", 10.0),
        "spindle_torque": ("mul", 1.1),
    },
}
_FAULT_MINUTES = {"bearing_wear": (120, 480), "tool_breakage": (10, 60), "coolant_loss": (30, 180)}
# Fraction of a fault's window spent ramping up to full severity.
_FAULT_RAMP = {"bearing_wear": 0.5, "tool_breakage": 0.0, "coolant_loss": 0.2}
_SENSOR_FAULT_MINUTES = {"nan_run": (5, 120), "stuck": (30, 360), "spike": (0, 0)}


class Event(BaseModel):
    """One injected event: what, on which machine (and sensors), from `start` to `end` (excl.)."""

    model_config = ConfigDict(extra="forbid")

    kind: EventKind
    machine_id: str
    start: datetime
    end: datetime
    sensors: list[str] = Field(default_factory=list)
    labelled: bool = Field(default=False, description="True for faults in fault_type/is_fault.")
    detail: dict[str, float] = Field(default_factory=dict)


def _events_in_windows(
    rng: np.random.Generator, steps: int, expected: float, min_len: int, max_len: int
) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) step windows, about `expected` of them."""
    count = int(rng.poisson(expected))
    if count == 0 or steps < 2:
        return []
    starts = np.sort(rng.integers(0, steps, count))
    lengths = rng.integers(min_len, max_len + 1, count)
    out: list[tuple[int, int]] = []
    free = 0
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        s = max(s, free)
        e = min(steps, s + max(1, n))
        if s < e:
            out.append((s, e))
            free = e + 1
    return out


@dataclass
class Timeline:
    """The steps of one generated history and the events found along them (filled in order)."""

    cfg: GeneratorConfig
    ids: list[str]
    t_sec: np.ndarray
    events: list[Event] = field(default_factory=list)

    @property
    def hours(self) -> np.ndarray:
        return (self.t_sec / 3600.0) % 24.0

    @property
    def days_from_start(self) -> np.ndarray:
        return (self.t_sec - self.t_sec[0]) / 86400.0

    def ts(self, i: int) -> datetime:
        return self.cfg.start + timedelta(seconds=int(i) * self.cfg.interval_seconds)


def labelled_faults(tl: Timeline, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inject the labelled faults into `x`; return the fault code per step and machine."""
    cfg = tl.cfg
    T, M = x.shape[0], x.shape[1]
    fault_code = np.zeros((T, M), dtype=np.int8)
    step_min = cfg.interval_seconds / 60.0
    for m in range(M):
        for code, kind in enumerate(LABELLED_FAULTS, start=1):
            lo, hi = _FAULT_MINUTES[kind]
            lo_s, hi_s = max(1, int(lo / step_min)), max(1, int(hi / step_min))
            expected = cfg.fault_fraction / len(LABELLED_FAULTS) * T / ((lo_s + hi_s) / 2)
            for s, e in _events_in_windows(rng, T, expected, lo_s, hi_s):
                if fault_code[s:e, m].any():
                    continue
                severity = float(rng.uniform(0.7, 1.3))
                n = e - s
                ramp = max(1, int(_FAULT_RAMP[kind] * n))
                profile = np.minimum(1.0, (np.arange(n) + 1) / ramp) * severity
                for sensor, (how, amount) in _FAULT_EFFECTS[kind].items():
                    j = SIDX[sensor]
                    if how == "mul":
                        x[s:e, m, j] *= 1.0 + (amount - 1.0) * profile
                    else:
                        x[s:e, m, j] += amount * profile
                fault_code[s:e, m] = code
                tl.events.append(
                    Event(
                        kind=kind,
                        machine_id=tl.ids[m],
                        start=tl.ts(s),
                        end=tl.ts(e),
                        sensors=list(_FAULT_EFFECTS[kind]),
                        labelled=True,
                        detail={"severity": severity},
                    )
                )
    return fault_code


def sensor_faults(tl: Timeline, x: np.ndarray, rng: np.random.Generator) -> None:
    """Sensor faults in `x`: NaN runs (mostly auxiliary sensors), stuck values, spikes."""
    cfg = tl.cfg
    T, M, F = x.shape
    step_min = cfg.interval_seconds / 60.0
    share = {"nan_run": 0.2, "stuck": 0.1, "spike": 0.7}
    p_sensor = np.where(np.isin(np.array(SENSORS), CORE_SENSORS), 0.2 / 4, 0.8 / 8)
    for m in range(M):
        busy = np.zeros(T, dtype=bool)  # one sensor fault at a time per machine: clean truth
        for kind in SENSOR_FAULTS:
            expected = cfg.sensor_faults_per_day * share[kind] * cfg.days
            lo, hi = _SENSOR_FAULT_MINUTES[kind]
            lo_s, hi_s = max(1, int(lo / step_min)), max(1, int(hi / step_min))
            for s, e in _events_in_windows(rng, T, expected, lo_s, hi_s):
                j = int(rng.choice(F, p=p_sensor if kind == "nan_run" else None))
                if busy[s:e].any():
                    continue
                busy[s:e] = True
                detail: dict[str, float] = {}
                if kind == "nan_run":
                    x[s:e, m, j] = np.nan
                elif kind == "stuck":
                    x[s:e, m, j] = x[s, m, j]
                    detail["value"] = float(x[s, m, j])
                else:
                    e = s + 1
                    factor = float(rng.uniform(3.0, 6.0))
                    x[s, m, j] *= factor
                    detail["factor"] = factor
                tl.events.append(
                    Event(
                        kind=kind,
                        machine_id=tl.ids[m],
                        start=tl.ts(s),
                        end=tl.ts(e),
                        sensors=[SENSORS[j]],
                        detail=detail,
                    )
                )


def inject_fault(
    frame: pd.DataFrame, machine_id: str, kind: str, severity: float = 1.0
) -> pd.Series:
    """Apply a labelled fault at `severity` (1.0: full) to `machine_id`'s rows of `frame`, in
    place, with the same effects on the same sensors as the generator's, and label them
    (`fault_type`, `is_fault`). Returns the mask of the rows it changed.

    For readings that are already generated (a live stream): the generator places its own
    faults at random, a scenario places this one where it wants it."""
    if kind not in _FAULT_EFFECTS:
        raise ValueError(f"fault kind {kind!r}: use one of {sorted(_FAULT_EFFECTS)}")
    rows = frame[ENTITY].astype(str) == machine_id
    for sensor, (how, amount) in _FAULT_EFFECTS[kind].items():
        if sensor not in frame.columns:
            continue
        if how == "mul":
            frame.loc[rows, sensor] = frame.loc[rows, sensor] * (1.0 + (amount - 1.0) * severity)
        else:
            frame.loc[rows, sensor] = frame.loc[rows, sensor] + amount * severity
    if FAULT_TYPE in frame.columns:
        frame.loc[rows, FAULT_TYPE] = kind
    if IS_FAULT in frame.columns:
        frame.loc[rows, IS_FAULT] = 1
    return rows
