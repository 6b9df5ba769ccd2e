"""Alarms during drift: what the serving side's drift-robust verdict (`loopline.serving.
alarm_events`) keeps visible after a recipe change that makes the model stale.

Per generated plant (seeded): a history with labelled faults, the autoencoder trained on it,
then two days of live readings with a +15 % recipe change after four hours and 5 % of rows
in labelled faults. From the change on, the model is treated as stale (the monitor confirms
drift later than that, so this is the harder case), and the readings go one row per machine
per step through `AlarmEvents`, exactly as the server feeds them. Reported after the change:
the share of normal and of fault rows the stale model's threshold and the core-sensor
fallback flag (what would alarm without this), and for the served `alarm_event`: the share of
normal rows active, false alarm events, labelled fault events detected and their delays.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_results
from loopline import quiet
from loopline.types.alarms import AlarmPolicy

SEEDS = (0, 1)
MACHINES = 4
HISTORY_DAYS = 3.0
LIVE_MINUTES = 2 * 1440
RECIPE_SHIFT = 0.15


def plant(seed: int) -> dict[str, Any]:
    from loopline.data.generator import GeneratorConfig, generate, live_traffic
    from loopline.data.schema import ENTITY, IS_FAULT, SENSORS, TIMESTAMP, factory_schema
    from loopline.models.alarms import detections, false_alarm_events, runs
    from loopline.models.evaluation_split import split_per_label
    from loopline.models.training import train_bundle
    from loopline.serving.alarm_events import AlarmEvents
    from loopline.types.model import Task, TrainingParams

    history, manifest = generate(
        GeneratorConfig(
            machines=MACHINES,
            days=HISTORY_DAYS,
            interval_seconds=60,
            seed=seed,
            fault_fraction=0.05,
        )
    )
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    train, _ = split_per_label(history, roles)
    params = TrainingParams(epochs=5, batch_size=128, seed=0)
    bundle = train_bundle(train, Task.ANOMALY_DETECTION, params, roles).bundle
    change = manifest.end + timedelta(hours=4)
    live, _ = live_traffic(
        manifest,
        minutes=LIVE_MINUTES,
        recipe_change_at=change,
        recipe_shift=RECIPE_SHIFT,
        fault_fraction=0.05,
        sensor_faults_per_day=0,
    )
    live = live.sort_values([TIMESTAMP, ENTITY], kind="stable").reset_index(drop=True)
    x = live[list(SENSORS)].to_numpy(np.float32)
    over = bundle.score(x)["is_anomaly"].astype(bool)
    core = [list(SENSORS).index(s) for s in bundle.core_feature_names]
    fallback = bundle.score_fallback(np.ascontiguousarray(x[:, core]))["is_anomaly"].astype(bool)
    after = (live[TIMESTAMP] >= change).to_numpy()
    fault = live[IS_FAULT].to_numpy().astype(bool)
    events = AlarmEvents.of(AlarmPolicy(), max_entities=MACHINES)  # the default spec.alarms
    active = np.zeros(len(live), dtype=bool)
    for _, rows in live.groupby(TIMESTAMP, sort=True).indices.items():
        step = events.step(
            live[ENTITY].iloc[rows].tolist(),
            over[rows].tolist(),
            x[rows],
            stale=bool(after[rows[0]]),
        )
        active[rows] = step.active
    false_events, first_hour, delays, missed = 0, 0, [], 0
    for _, rows in live[after].groupby(ENTITY).indices.items():
        idx = np.flatnonzero(after)[rows]
        false_events += false_alarm_events(fault[idx], active[idx])
        # false events starting within the first hour (60 readings) after the change
        first_hour += sum(1 for s, e in runs(active[idx]) if s < 60 and not fault[idx][s:e].any())
        for found in detections(fault[idx], active[idx]):
            if found.delay is None:
                missed += 1
            else:
                delays.append(found.delay)
    normal, faulty = after & ~fault, after & fault

    def share(flags: np.ndarray, mask: np.ndarray) -> float | None:
        return round(float(flags[mask].mean()), 4) if mask.any() else None

    return {
        "seed": seed,
        "rows_after_change": int(after.sum()),
        "fault_rows_after_change": int(faulty.sum()),
        "stale_threshold": {
            "normal_rows_flagged": share(over, normal),
            "fault_rows_flagged": share(over, faulty),
        },
        "core_sensor_fallback": {
            "normal_rows_flagged": share(fallback, normal),
            "fault_rows_flagged": share(fallback, faulty),
        },
        "alarm_event_while_stale": {
            "normal_rows_active": share(active, normal),
            "fault_rows_active": share(active, faulty),
            "false_alarm_events": false_events,
            "false_alarm_events_first_hour": first_hour,
            "fault_events": len(delays) + missed,
            "fault_events_detected": len(delays),
            "median_delay_readings": float(np.median(delays)) if delays else None,
        },
    }


def main() -> Path:
    quiet.apply()
    return write_results(
        "drift_alarms",
        {
            "machine": machine(),
            "config": {
                "machines": MACHINES,
                "history_days": HISTORY_DAYS,
                "live_minutes": LIVE_MINUTES,
                "recipe_shift": RECIPE_SHIFT,
                "alarms": AlarmPolicy().model_dump(by_alias=True, exclude_none=True),
            },
            "plants": [plant(seed) for seed in SEEDS],
        },
    )


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(main())
