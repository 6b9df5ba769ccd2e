"""Can a production line trust the alarms? Every anomaly detector on the generated plant and
on a real labelled sensor data set, with the product's own training and evaluation.

(a) Generated plant, as `bench_window_detector.py` measures it (seeds 3, 4, 5; 6 machines x
10 days at one reading a minute, 4 % of rows in labelled faults; `train_bundle` on the older
70 %, `evaluate_bundle` on the newest 30 %; 15 epochs) with `training.detector: window`
(default windowSize 4), so one bundle holds the window autoencoder (primary), the per-row
autoencoder, the core-sensor fallback and both baselines. Three alarm settings fixed up front:
the defaults (`thresholdQuantile` 0.995, k/n/m 5/8/1), a 1 % false-alarm budget, and the
defaults with a per-machine score baseline (`alarms.baselineReadings` 1 440); beside them
the previous default debounce (3/5/1), and the defaults on three further seeds (6, 7, 8)
that played no part in choosing them. Figures per seed, their median, and the detection
delay pooled over every labelled fault event.

(b) UCI Cardiotocography (`benchmarks.ctg_data`): normal = NSP 1, anomaly = NSP 3. Per split
seed, the normal recordings are shuffled; 75 % go to `train_bundle`, which fits on 80 % of
them (60 % of all normals) and calibrates every threshold on the other 20 % (15 %) for a 10 %
false-alarm budget; the evaluation set is the remaining 25 % of normals and every pathologic
recording. Reported at the calibrated thresholds and, to compare detectors at the same FAR,
with each detector's threshold placed at FAR 10 % on the evaluation normals. Settings fixed
before any run: 100 epochs at batch 32 (the default batch of 256 gives four steps an epoch on
~1 000 rows); the pipeline defaults (30 epochs, batch 256) are reported beside them. The
recordings are not sequences: no window detector, no event figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import quality_table as qt
from benchmarks.common import write_results
from loopline import quiet

SEEDS = (3, 4, 5)
MACHINES = 6
DAYS = 10.0
FAULT_FRACTION = 0.04
PLANT_EPOCHS = 15
# spec.alarms per setting, fixed before any run; entity_baseline: each machine's scores against
# the median of its previous day of readings (1 440 at one a minute: more than twice the
# longest fault the generator injects, 480 readings, so a fault cannot carry the median)
PLANT_SETTINGS: dict[str, dict[str, float]] = {
    "defaults": {},
    "budget_1pct": {"maxFalseAlarmRate": 0.01},
    "entity_baseline": {"baselineReadings": 1440},
    # the debounce the defaults had before 5 of 8, measured beside them in the same run
    "previous_defaults_3_of_5": {"window": 5, "raiseAt": 3, "clearBelow": 1},
}
# 5 of 8 was chosen on seeds 3-5's evaluation readings; these plants, never looked at before
# the choice, say whether it holds on data it was not chosen on
UNSEEN_SEEDS = (6, 7, 8)

CTG_SEEDS = (0, 1, 2, 3, 4)
CTG_TRAIN_SHARE = 0.75  # of the normals, to train_bundle: 80 % fit, 20 % calibrate
CTG_BUDGET = 0.10
CTG_SETTINGS: dict[str, dict[str, int]] = {
    "small_table": {"epochs": 100, "batch_size": 32},
    "pipeline_defaults": {},
}
DECLARED = "small_table"  # the setting the targets are judged on, chosen before measuring
CTG_DETECTORS = {
    "dense_ae": "",
    "fallback": "fallback_",
    "pca_t2_q": "pca_",
    "max_abs_z": "baseline_",
}
TIMESTAMP = "ts"


def plant_run(seed: int, setting: dict[str, float]) -> dict[str, Any]:
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
    alarms = AlarmPolicy.model_validate(setting)
    params = TrainingParams(epochs=PLANT_EPOCHS, detector="window")
    start = time.perf_counter()
    bundle = train_bundle(train, Task.ANOMALY_DETECTION, params, roles, alarms=alarms).bundle
    found = evaluate_bundle(bundle, held, alarms=alarms)
    detectors = {}
    for name, prefix in qt.PLANT_DETECTORS.items():
        events = found.faults.get(prefix or "primary", [])
        detectors[name] = qt.figures(found.metrics, prefix) | {
            "fault_event_delays": [e["delay_readings"] for e in events]
        }
    return {
        "seed": seed,
        "eval_fault_events": found.metrics.get("eval_fault_events"),
        "eval_entity_days": found.metrics.get("eval_entity_days"),
        "seconds": round(time.perf_counter() - start, 1),
        "detectors": detectors,
    }


def plant(setting: dict[str, float], seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    runs = [plant_run(seed, setting) for seed in seeds]
    median = {
        name: qt.median_figures(
            {k: v for k, v in run["detectors"][name].items() if k != "fault_event_delays"}
            for run in runs
        )
        for name in qt.PLANT_DETECTORS
    }
    pooled = {
        name: qt.pooled_delays(
            {"delay_readings": d}
            for run in runs
            for d in run["detectors"][name]["fault_event_delays"]
        )
        for name in qt.PLANT_DETECTORS
    }
    primary = pooled["window_ae"]["median_delay_readings"]
    false_events = median["window_ae"]["false_alarm_events_per_entity_day"]
    targets = [
        qt.target("window AE: median detection delay (readings, pooled events)", primary, 5, "<"),
        qt.target("window AE: false alarm events per machine-day (median)", false_events, 1, "<="),
        qt.beats(
            "window AE ahead of the per-row AE on F1 (median)",
            median["window_ae"]["f1"],
            median["dense_ae"]["f1"],
        ),
    ]
    return {
        "max_false_alarm_rate": setting.get("maxFalseAlarmRate"),
        "alarms": setting,
        "seeds": list(seeds),
        "runs": runs,
        "median": median,
        "pooled_fault_events": pooled,
        "targets": targets,
    }


def ctg_split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(to train_bundle, evaluation): a seeded share of the normals; the rest and every
    anomaly evaluate."""
    from benchmarks.ctg_data import LABEL

    normal = df.index[df[LABEL] == 0].to_numpy()
    order = np.random.default_rng(seed).permutation(normal)
    n_train = round(len(order) * CTG_TRAIN_SHARE)
    train = df.loc[np.sort(order[:n_train])]
    test = df.drop(index=order[:n_train])
    return train, test


def ctg_run(df: pd.DataFrame, seed: int, setting: dict[str, int]) -> dict[str, Any]:
    from benchmarks.ctg_data import FEATURES, FHR_FEATURES, LABEL, RECORDING
    from loopline.models.baseline import RangeBaseline
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.pca_baseline import PcaBaseline
    from loopline.models.training import train_bundle
    from loopline.types.alarms import AlarmPolicy
    from loopline.types.common import Task
    from loopline.types.dataset import DatasetRoles, LabelKind
    from loopline.types.policy import TrainingParams

    roles = DatasetRoles(
        entity=RECORDING,
        timestamp=TIMESTAMP,
        features=list(FEATURES),
        core_features=list(FHR_FEATURES),
        label=LABEL,
        label_kind=LabelKind.ANOMALY_FLAG,
    )
    # one recording is one entity with one reading: the evaluation needs a time column
    df = df.assign(**{TIMESTAMP: pd.Timestamp("2000-01-01", tz="UTC")})
    train, test = ctg_split(df, seed)
    alarms = AlarmPolicy.model_validate({"maxFalseAlarmRate": CTG_BUDGET})
    params = TrainingParams(seed=seed, **setting)
    start = time.perf_counter()
    trained = train_bundle(train, Task.ANOMALY_DETECTION, params, roles, alarms=alarms)
    bundle = trained.bundle
    found = evaluate_bundle(bundle, test, alarms=alarms)
    x = test[list(FEATURES)].to_numpy(np.float32)
    y = test[LABEL].to_numpy(np.int64)
    scores = {
        "dense_ae": bundle.score(x)["anomaly_score"],
        "fallback": bundle.score_fallback(test[list(FHR_FEATURES)].to_numpy(np.float32))[
            "anomaly_score"
        ],
        "pca_t2_q": PcaBaseline.from_dict(bundle.metadata["pca_baseline"]).score(x),
        "max_abs_z": RangeBaseline.from_dict(bundle.metadata["baseline"]).score(x),
    }
    return {
        "seed": seed,
        "rows": {
            **trained.rows,
            "calibration": len(train) - trained.rows["primary"],
            "eval_normal": int((y == 0).sum()),
            "eval_pathologic": int((y == 1).sum()),
        },
        "seconds": round(time.perf_counter() - start, 1),
        "calibrated": {
            name: qt.figures(found.metrics, prefix, events=False)
            for name, prefix in CTG_DETECTORS.items()
        },
        "at_far_10pct": {name: qt.at_far(y, s, CTG_BUDGET) for name, s in scores.items()},
    }


def ctg_setting(df: pd.DataFrame, setting: dict[str, int]) -> dict[str, Any]:
    runs = [ctg_run(df, seed, setting) for seed in CTG_SEEDS]
    median = {
        view: {name: qt.median_figures(run[view][name] for run in runs) for name in CTG_DETECTORS}
        for view in ("calibrated", "at_far_10pct")
    }
    cal, same = median["calibrated"], median["at_far_10pct"]
    targets = [
        qt.target(
            "dense AE: F1 at the calibrated threshold (median)", cal["dense_ae"]["f1"], 0.8, ">="
        ),
        qt.target(
            "dense AE: FAR at the calibrated threshold (median)",
            cal["dense_ae"]["far"],
            CTG_BUDGET,
            "<=",
        ),
        qt.target("dense AE: F1 at FAR 10 % (median)", same["dense_ae"]["f1"], 0.8, ">="),
        qt.beats(
            "dense AE ahead of PCA T2+Q on F1 at FAR 10 % (median)",
            same["dense_ae"]["f1"],
            same["pca_t2_q"]["f1"],
        ),
        qt.beats(
            "dense AE ahead of PCA T2+Q on F1, calibrated (median)",
            cal["dense_ae"]["f1"],
            cal["pca_t2_q"]["f1"],
        ),
    ]
    return {"params": setting, "runs": runs, "median": median, "targets": targets}


def ctg() -> dict[str, Any]:
    from benchmarks import ctg_data

    df = ctg_data.load_ctg()
    return {
        "dataset": {
            "name": "UCI Cardiotocography (CTG), ODDS 'cardio' convention",
            "licence": "CC BY 4.0 (UCI)",
            "package": ctg_data.PACKAGE,
            "package_version": ctg_data.VERSION,
            "package_licence": "MIT",
            "member": ctg_data.MEMBER,
            "sha256": ctg_data.CSV_SHA256,
            "normal_rows": int((df[ctg_data.LABEL] == 0).sum()),
            "anomaly_rows": int((df[ctg_data.LABEL] == 1).sum()),
            "features": list(ctg_data.FEATURES),
            "fallback_features": list(ctg_data.FHR_FEATURES),
        },
        "protocol": {
            "split_seeds": list(CTG_SEEDS),
            "fit_share_of_normals": CTG_TRAIN_SHARE * 0.8,
            "calibration_share_of_normals": CTG_TRAIN_SHARE * 0.2,
            "max_false_alarm_rate": CTG_BUDGET,
            "declared_setting": DECLARED,
        },
        "not_applicable": {
            "window_ae": "recordings are independent summaries, not per-entity sequences",
            "event_figures": "alarm events per entity-day, fault events detected and detection "
            "delay need per-entity sequences in time; each recording is one row",
            "ahead_of_per_row_ae": "the primary on this data is the per-row autoencoder itself",
        },
        "settings": {name: ctg_setting(df, s) for name, s in CTG_SETTINGS.items()},
    }


def main() -> Path:
    quiet.apply()
    start = time.perf_counter()
    real = ctg()
    generated = {name: plant(setting) for name, setting in PLANT_SETTINGS.items()}
    generated["defaults_unseen_seeds"] = plant({}, UNSEEN_SEEDS)
    return write_results(
        "quality",
        {
            "config": {
                "plant": {
                    "seeds": list(SEEDS),
                    "machines": MACHINES,
                    "days": DAYS,
                    "fault_fraction": FAULT_FRACTION,
                    "epochs": PLANT_EPOCHS,
                    "detector": "window",
                    "split": "older 70 % of readings train, newest 30 % evaluate",
                },
            },
            "plant": generated,
            "ctg": real,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(main())
