"""What the window detector adds over the per-row autoencoder on the generated plant.

Per seed: 6 machines x 10 days at one reading a minute, 4 % of rows in labelled faults; each
detector trained by `train_bundle` on the older 70 % of the readings (15 epochs, default
network and `thresholdQuantile`, default `spec.alarms`) and judged by `evaluate_bundle` on the
newest 30 %, with the same reliability figures the pipeline reports: precision, recall, F1,
ROC-AUC, FAR and MAR per row, alarm events and false alarm events per entity-day after
debouncing, share of fault events detected and the median detection delay. The window
detector keeps the per-row verdict for each machine's first windowSize-1 readings, as served.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from loopline import quiet

SEEDS = (3, 4, 5)
MACHINES = 6
DAYS = 10.0
FAULT_FRACTION = 0.04
EPOCHS = 15
DETECTORS = (("dense", 4), ("window", 4), ("window", 8), ("window", 16))
FIGURES = (
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "far",
    "mar",
    "alarm_events_per_entity_day",
    "false_alarm_events_per_entity_day",
    "fault_events_detected",
    "detection_delay_median_readings",
)


def plant(seed: int) -> dict[str, Any]:
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.training import train_bundle
    from loopline.types.alarms import AlarmPolicy
    from loopline.types.common import Task
    from loopline.types.policy import TrainingParams

    config = GeneratorConfig(
        machines=MACHINES, days=DAYS, interval_seconds=60, seed=seed, fault_fraction=FAULT_FRACTION
    )
    df, _ = generate(config)
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    cut = df[roles.timestamp].quantile(0.7)
    train, held = df[df[roles.timestamp] < cut], df[df[roles.timestamp] >= cut]
    alarms = AlarmPolicy()
    rows = []
    metrics: dict[str, float] = {}
    for detector, size in DETECTORS:
        params = TrainingParams(epochs=EPOCHS, detector=detector, window_size=size)
        start = time.perf_counter()
        bundle = train_bundle(train, Task.ANOMALY_DETECTION, params, roles, alarms=alarms).bundle
        metrics = evaluate_bundle(bundle, held, alarms=alarms).metrics
        row: dict[str, Any] = {
            "detector": detector,
            "window_size": size if detector != "dense" else 1,
        }
        row |= {k: metrics.get(k) for k in FIGURES}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
    return {
        "seed": seed,
        "eval_fault_events": metrics.get("eval_fault_events"),
        "eval_entity_days": metrics.get("eval_entity_days"),
        "pca_f1": metrics.get("pca_f1"),
        "detectors": rows,
    }


def main() -> Path:
    quiet.apply()
    return write_results(
        "window_detector",
        {
            "config": {
                "machines": MACHINES,
                "days": DAYS,
                "fault_fraction": FAULT_FRACTION,
                "epochs": EPOCHS,
                "split": "older 70 % of readings train, newest 30 % evaluate",
            },
            "plants": [plant(seed) for seed in SEEDS],
        },
    )


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(main())
