"""Factory sensor histories: seeded, vectorised, with a manifest of every injected event.

The demo, the tests and the benchmarks get their data here; nothing is downloaded. Readings
follow a small physical model of a drilling machine so that sensors move together the way real
ones do (torque and current with load, vibration with speed and wear, temperatures with load and
coolant), which is what lets an autoencoder see a fault as a broken correlation:

- operating point: the recipe's feed rate and spindle speed; a recipe change scales both
  (the drift case, size configurable);
- load: a daily two-shift cycle plus slow per-machine fluctuations;
- per-machine offsets (calibration) and per-sensor noise;
- wear: grows slowly and raises vibration and current; a part replacement resets it (a step);
- labelled faults (`fault_type`, `is_fault`): bearing wear, tool breakage, coolant loss, each
  moving several sensors for a window of time;
- sensor faults, not labelled (data problems, not machine problems): NaN runs, stuck values,
  spikes.

Everything is drawn from generators seeded by (seed, purpose, start), so the same config gives
the same frame, and a later time range continues a history with the same machines.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.data.faults import (
    LABELLED_FAULTS,
    SENSOR_FAULTS,
    SIDX,
    Event,
    EventKind,
    Timeline,
    labelled_faults,
    sensor_faults,
)
from loopline.data.schema import (
    ENTITY,
    FAULT_TYPE,
    FAULT_TYPES,
    IS_FAULT,
    NOMINAL,
    SENSORS,
    TIMESTAMP,
    factory_schema,
)

# Re-exported: the generator's API names its events and fault kinds.
__all__ = [
    "LABELLED_FAULTS",
    "SENSOR_FAULTS",
    "Event",
    "EventKind",
    "GeneratorConfig",
    "MachineState",
    "Manifest",
    "RecipeChange",
    "generate",
    "live_traffic",
    "machine_ids",
    "write_dataset",
]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DATA_FILE = "sensors.parquet"
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "schema.json"

# Relative noise of each sensor (fraction of its nominal value).
_NOISE = np.array([0.04, 0.02, 0.02, 0.01, 0.01, 0.005, 0.04, 0.01, 0.01, 0.02, 0.02, 0.01])


class RecipeChange(BaseModel):
    """From `at` on, the operating point (feed rate and spindle speed) is scaled by 1 + shift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    shift: float = Field(default=0.15, gt=-0.9, le=2.0)
    machines: list[str] | None = Field(default=None, description="None means every machine.")

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return _utc(v, "at")


class MachineState(BaseModel):
    """Where a machine was at the end of a generated range, so a later range continues it."""

    model_config = ConfigDict(extra="forbid")

    wear: float
    recipe: float = Field(description="Operating-point factor (product of recipe changes).")


class GeneratorConfig(BaseModel):
    """Everything that determines a generated data set; the same config gives the same data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machines: int = Field(default=10, ge=1, le=1000)
    days: float = Field(default=30.0, gt=0, le=3650)
    interval_seconds: int = Field(default=60, ge=1, le=86400)
    start: datetime = DEFAULT_START
    seed: int = Field(default=0, ge=0)
    recipe_changes: list[RecipeChange] = Field(default_factory=list)
    fault_fraction: float = Field(
        default=0.02, ge=0, le=0.5, description="Expected fraction of rows inside a labelled fault."
    )
    part_life_days: float = Field(
        default=12.0, gt=0, description="Mean time between part replacements."
    )
    sensor_faults_per_day: float = Field(
        default=1.5, ge=0, description="Expected NaN runs + stuck values + spikes per machine-day."
    )
    noise_scale: float = Field(default=1.0, ge=0, le=10)
    initial_state: dict[str, MachineState] | None = Field(
        default=None, description="Per machine: continue from this wear and recipe (live data)."
    )

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return _utc(v, "start")

    @property
    def steps(self) -> int:
        return max(1, round(self.days * 86400 / self.interval_seconds))

    @property
    def end(self) -> datetime:
        """Exclusive end: the timestamp after the last row."""
        return self.start + timedelta(seconds=self.steps * self.interval_seconds)

    @property
    def rows(self) -> int:
        return self.steps * self.machines


class Manifest(BaseModel):
    """The truth about a generated data set: its config, its events and where it ended."""

    model_config = ConfigDict(extra="forbid")

    config: GeneratorConfig
    rows: int
    machines: list[str]
    start: datetime
    end: datetime
    events: list[Event]
    end_state: dict[str, MachineState]

    def of_kind(self, *kinds: str) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def save(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.model_validate(json.loads(Path(path).read_text()))


def _utc(v: datetime, field: str) -> datetime:
    if v.tzinfo is None:
        raise ValueError(f"{field}: timestamps must be timezone-aware (UTC), got {v.isoformat()}")
    return v.astimezone(UTC)


def machine_ids(n: int) -> list[str]:
    """drill-01, drill-02, … (three digits from 100 machines on, so they sort)."""
    width = max(2, len(str(n)))
    return [f"drill-{i + 1:0{width}d}" for i in range(n)]


class _Machines:
    """Per-machine constants drawn from the seed alone, so every time range agrees on them."""

    def __init__(self, seed: int, n: int) -> None:
        rng = np.random.default_rng([seed, 0, n])
        self.gain = 1.0 + 0.03 * rng.standard_normal((n, len(SENSORS)))
        self.load_base = rng.uniform(0.85, 1.1, n)
        self.phase = rng.uniform(0, 2 * np.pi, (n, 3))
        self.wear_per_day = rng.uniform(0.03, 0.08, n)
        self.initial_wear = rng.uniform(0.0, 0.4, n)
        self.ambient = rng.uniform(19.0, 24.0, n)


def _recipe(tl: Timeline) -> np.ndarray:
    """Operating point: the product of the recipe changes in force at each step."""
    cfg, ids = tl.cfg, tl.ids
    T, M = len(tl.t_sec), len(ids)
    recipe = np.ones((T, M))
    if cfg.initial_state:
        for m, mid in enumerate(ids):
            if mid in cfg.initial_state:
                recipe[:, m] = cfg.initial_state[mid].recipe
    for rc in cfg.recipe_changes:
        if rc.machines is not None:
            unknown = sorted(set(rc.machines) - set(ids))
            if unknown:
                raise ValueError(f"recipe_changes: unknown machines {unknown}")
        first = int(np.searchsorted(tl.t_sec, rc.at.timestamp()))
        cols = [ids.index(m) for m in rc.machines] if rc.machines is not None else list(range(M))
        if first >= T:
            continue
        recipe[first:, cols] *= 1.0 + rc.shift
        for m in cols:
            tl.events.append(
                Event(
                    kind="recipe_change",
                    machine_id=ids[m],
                    start=tl.ts(first),
                    end=cfg.end,
                    sensors=["feed_rate", "spindle_speed"],
                    detail={"shift": rc.shift},
                )
            )
    return recipe


def _load(tl: Timeline, mach: _Machines, rng: np.random.Generator) -> np.ndarray:
    """Load: two shifts (06-14, 14-22) busy, nights light; plus slow fluctuations."""
    hours, days = tl.hours, tl.days_from_start
    shift_profile = 0.7 + 0.3 / (1.0 + np.exp(-(np.minimum(hours - 5.5, 22.5 - hours)) * 2.0))
    slow = 0.04 * np.sin(2 * np.pi * days[:, None] / 3.1 + mach.phase[None, :, 0]) + 0.03 * np.sin(
        2 * np.pi * days[:, None] * 5.3 + mach.phase[None, :, 1]
    )
    load = shift_profile[:, None] * mach.load_base[None, :] + slow
    load *= 1.0 + 0.02 * tl.cfg.noise_scale * rng.standard_normal(load.shape)
    return load


def _wear(tl: Timeline, mach: _Machines, rng: np.random.Generator) -> np.ndarray:
    """Wear since the last part replacement (replacements are events)."""
    cfg, ids, days = tl.cfg, tl.ids, tl.days_from_start
    T, M = len(tl.t_sec), len(ids)
    wear = np.empty((T, M))
    for m in range(M):
        start_wear = (
            cfg.initial_state[ids[m]].wear
            if cfg.initial_state and ids[m] in cfg.initial_state
            else mach.initial_wear[m]
        )
        n_repl = rng.poisson(cfg.days / cfg.part_life_days)
        repl = np.sort(rng.integers(1, T, n_repl)) if n_repl and T > 1 else np.array([], int)
        repl = np.unique(repl)
        seg = np.searchsorted(repl, np.arange(T), side="right")  # replacements so far
        since = np.where(seg == 0, days, days - np.r_[0.0, days[repl]][seg])
        wear[:, m] = np.where(seg == 0, start_wear, 0.0) + mach.wear_per_day[m] * since
        for r in repl.tolist():
            tl.events.append(
                Event(
                    kind="part_replacement",
                    machine_id=ids[m],
                    start=tl.ts(r),
                    end=tl.ts(r + 1),
                    sensors=["spindle_vibration_rms", "axial_vibration", "spindle_current"],
                    detail={"wear_before": float(wear[r - 1, m]) if r > 0 else 0.0},
                )
            )
    return wear


def _physics(
    recipe: np.ndarray, load: np.ndarray, wear: np.ndarray, ambient: np.ndarray
) -> np.ndarray:
    """The physical model: every sensor's noiseless reading, [T, M, F]."""
    feed = NOMINAL["feed_rate"] * recipe
    speed = NOMINAL["spindle_speed"] * recipe
    op = recipe  # operating point ratio, feed and speed scale together
    torque = NOMINAL["spindle_torque"] * load * op**0.8 * (1 + 0.08 * wear)
    power = (torque / NOMINAL["spindle_torque"]) * op  # relative mechanical power
    pf = NOMINAL["power_factor"] - 0.12 * (1.0 - np.clip(load, 0, 1.2)) - 0.02 * wear
    current = NOMINAL["spindle_current"] * power * (NOMINAL["power_factor"] / pf) * (1 + 0.1 * wear)
    vib = NOMINAL["spindle_vibration_rms"] * op**1.5 * (0.8 + 0.2 * load) * (1 + 0.6 * wear)
    axial = NOMINAL["axial_vibration"] * (feed / NOMINAL["feed_rate"]) * load * (1 + 0.3 * wear)
    acoustic = (
        NOMINAL["acoustic_level"]
        + 10 * np.log10(vib / NOMINAL["spindle_vibration_rms"])
        + 6 * np.log10(op)
    )
    flow = NOMINAL["coolant_flow"] * np.ones_like(recipe)
    pressure = NOMINAL["chamber_pressure"] * (flow / NOMINAL["coolant_flow"]) ** 2
    coolant_t = ambient + 4.0 * power * (NOMINAL["coolant_flow"] / flow)
    motor_t = ambient + 22.0 * (current / NOMINAL["spindle_current"]) ** 2
    x = np.empty((*recipe.shape, len(SENSORS)), dtype=np.float64)
    for name, arr in (
        ("spindle_vibration_rms", vib),
        ("spindle_current", current),
        ("spindle_torque", torque),
        ("coolant_temperature", coolant_t),
        ("feed_rate", feed),
        ("spindle_speed", speed),
        ("axial_vibration", axial),
        ("acoustic_level", acoustic),
        ("motor_temperature", motor_t),
        ("coolant_flow", flow),
        ("chamber_pressure", pressure),
        ("power_factor", pf),
    ):
        x[:, :, SIDX[name]] = arr
    return x


def generate(config: GeneratorConfig | None = None) -> tuple[pd.DataFrame, Manifest]:
    """A frame in the factory schema (sorted by timestamp, then machine) and its manifest.

    The steps draw from one random generator in a fixed order (load noise, part replacements,
    sensor noise, labelled faults, sensor faults), so a seed always gives the same history."""
    cfg = config or GeneratorConfig()
    T, M = cfg.steps, cfg.machines
    ids = machine_ids(M)
    mach = _Machines(cfg.seed, M)
    rng = np.random.default_rng([cfg.seed, 1, int(cfg.start.timestamp()), T, M])
    t_sec = np.arange(T, dtype=np.float64) * cfg.interval_seconds + cfg.start.timestamp()
    tl = Timeline(cfg, ids, t_sec)

    recipe = _recipe(tl)
    load = _load(tl, mach, rng)
    ambient = mach.ambient[None, :] + 2.5 * np.sin(2 * np.pi * (tl.hours[:, None] - 9.0) / 24.0)
    wear = _wear(tl, mach, rng)
    x = _physics(recipe, load, wear, ambient)
    x *= mach.gain[None, :, :]
    x *= 1.0 + (_NOISE * cfg.noise_scale)[None, None, :] * rng.standard_normal(x.shape)
    fault_code = labelled_faults(tl, x, rng)

    # Keep physical readings inside the valid ranges before the sensor faults (spikes may leave).
    schema = factory_schema()
    lo_arr = np.array([schema.feature(s).min for s in SENSORS], dtype=np.float64)
    hi_arr = np.array([schema.feature(s).max for s in SENSORS], dtype=np.float64)
    np.clip(x, lo_arr, hi_arr, out=x)
    sensor_faults(tl, x, rng)

    frame = _to_frame(cfg, ids, x, fault_code)
    events = sorted(tl.events, key=lambda e: (e.start, e.machine_id, e.kind))
    end_state = {
        ids[m]: MachineState(wear=float(wear[-1, m]), recipe=float(recipe[-1, m])) for m in range(M)
    }
    manifest = Manifest(
        config=cfg,
        rows=len(frame),
        machines=ids,
        start=cfg.start,
        end=cfg.end,
        events=events,
        end_state=end_state,
    )
    return frame, manifest


def _to_frame(
    cfg: GeneratorConfig, ids: list[str], x: np.ndarray, fault_code: np.ndarray
) -> pd.DataFrame:
    T, M, F = x.shape
    times = pd.date_range(cfg.start, periods=T, freq=pd.Timedelta(seconds=cfg.interval_seconds))
    flat = x.reshape(T * M, F).astype(np.float32)
    codes = fault_code.reshape(T * M)
    data: dict[str, object] = {
        ENTITY: np.tile(np.array(ids, dtype=object), T),
        TIMESTAMP: np.repeat(times.values, M),
    }
    for j, name in enumerate(SENSORS):
        data[name] = flat[:, j]
    data[FAULT_TYPE] = np.array(FAULT_TYPES, dtype=object)[codes]
    data[IS_FAULT] = (codes > 0).astype(np.int64)
    frame = pd.DataFrame(data)
    frame[TIMESTAMP] = frame[TIMESTAMP].dt.tz_localize(UTC)  # .values dropped the zone
    return frame


def live_traffic(
    history: Manifest,
    *,
    start: datetime | None = None,
    minutes: float = 60.0,
    recipe_change_at: datetime | None = None,
    recipe_shift: float = 0.15,
    fault_fraction: float | None = None,
    sensor_faults_per_day: float | None = None,
) -> tuple[pd.DataFrame, Manifest]:
    """Readings after a history (same machines, wear and recipe), with an optional recipe change.

    The demo and the drift monitor's tests stream these: without a recipe change they look like
    the history; with one, the operating point moves at `recipe_change_at` (the drift case).
    """
    cfg = history.config
    begin = _utc(start, "start") if start is not None else history.end
    changes = (
        [RecipeChange(at=recipe_change_at, shift=recipe_shift)]
        if recipe_change_at is not None
        else []
    )
    live_cfg = cfg.model_copy(
        update={
            "start": begin,
            "days": minutes / 1440.0,
            "recipe_changes": changes,
            "initial_state": history.end_state,
            "fault_fraction": cfg.fault_fraction if fault_fraction is None else fault_fraction,
            "sensor_faults_per_day": (
                cfg.sensor_faults_per_day
                if sensor_faults_per_day is None
                else sensor_faults_per_day
            ),
        }
    )
    return generate(GeneratorConfig.model_validate(live_cfg.model_dump()))


def write_dataset(frame: pd.DataFrame, manifest: Manifest, out_dir: Path) -> Path:
    """Write `sensors.parquet`, `manifest.json` and `schema.json` into `out_dir`; return the parquet."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DATA_FILE
    frame.to_parquet(path, index=False)
    manifest.save(out_dir / MANIFEST_FILE)
    factory_schema().save(out_dir / SCHEMA_FILE)
    return path
