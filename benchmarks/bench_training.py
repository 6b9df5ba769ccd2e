"""Training cost: rows/s at 100k and 1M rows, the local pipeline's overhead, MLflow per model.

- `training`: `train_bundle` (autoencoder primary + core fallback + baseline, one epoch) on
  generated data of 100k and 1M rows; rows/s counts rows x epochs x networks per wall second,
  and the ratio of the two sizes shows whether throughput holds as data grows. The 100k case
  A 20k-row pair compares our single-threaded training with torch's default intra-op
  threads on the same data (the ratio justifies `loopline.models.training.single_threaded`).
- the local pipeline run (wall, inside the steps, overhead, its floors) is `bench_pipeline`.
- `mlflow`: wall time of logging the bundle, the reference rows and registering + gating a
  version (`loopline.tracking.publish.publish`), per model, against a SQLite store, next to
  the time of saving the same bundle to a local folder (the floor).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from loopline import quiet

EPOCHS = 1
SIZES = {"100k": (10, 7.0), "1M": (10, 70.0)}  # machines, days at 60 s: 100,800 / 1,008,000 rows
THREADS_PEER = (2, 7.0)  # 20,160 rows: single-threaded vs torch's default threads, same data


def _train(machines: int, days: float, *, default_threads: bool = False) -> dict[str, Any]:
    import loopline.models.training as training
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.types.common import Task
    from loopline.types.policy import TrainingParams

    frame, _ = generate(GeneratorConfig(machines=machines, days=days, interval_seconds=60))
    original = training.single_threaded
    if default_threads:

        @contextlib.contextmanager
        def unchanged() -> Iterator[None]:
            yield

        training.single_threaded = unchanged
    try:
        trained = training.train_bundle(
            frame,
            Task.ANOMALY_DETECTION,
            TrainingParams(epochs=EPOCHS),
            factory_schema().roles(Task.ANOMALY_DETECTION),
        )
    finally:
        training.single_threaded = original
    rows = trained.rows["primary"] + trained.rows["fallback"]
    return {
        "rows": len(frame),
        "training_rows_per_network": trained.rows,
        "epochs": EPOCHS,
        "seconds": trained.seconds,
        "rows_per_second": rows * EPOCHS / trained.seconds,
    }


def _mlflow(root: Path, models: int = 3) -> dict[str, Any]:
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.evaluation_split import normal_rows, split_per_label
    from loopline.models.training import train_bundle
    from loopline.tracking.experiments import client_for, ensure_experiment, ensure_run
    from loopline.tracking.publish import publish, reference_rows
    from loopline.types.common import Task
    from loopline.types.policy import TrainingParams, ValidationPolicy

    frame, _ = generate(
        GeneratorConfig(machines=2, days=2, interval_seconds=60, fault_fraction=0.05)
    )
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    train, evaluation = split_per_label(frame, roles)
    trained = train_bundle(train, Task.ANOMALY_DETECTION, TrainingParams(epochs=1), roles)
    metrics = evaluate_bundle(trained.bundle, evaluation).metrics
    reference = reference_rows(
        train, trained.bundle.feature_names, normal=normal_rows(train, roles)
    )
    start = time.perf_counter()
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    experiment = ensure_experiment(client, "bench", "drill-ae")
    store_setup = time.perf_counter() - start
    publish_s, save_s = [], []
    for i in range(models):
        run_id = ensure_run(client, experiment, f"bench-{i}", {})
        start = time.perf_counter()
        publish(
            client,
            registered_name="bench.drill-ae",
            run_id=run_id,
            bundle=trained.bundle,
            metrics=metrics,
            policy=ValidationPolicy(metric="roc_auc"),
            champion_metrics=metrics if i else None,
            champion_version="1" if i else None,
            reference=reference,
            version_tags={},
        )
        publish_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        trained.bundle.save(root / f"bundle-{i}")
        save_s.append(time.perf_counter() - start)
    mean_publish = sum(publish_s) / models
    mean_save = sum(save_s) / models
    return {
        "models": models,
        "store_setup_seconds": store_setup,
        "log_and_register_seconds": publish_s,
        "mean_log_and_register_seconds": mean_publish,
        "warm_mean_log_and_register_seconds": sum(publish_s[1:]) / max(1, models - 1),
        "mean_local_save_seconds": mean_save,
        "log_and_register_over_local_save": mean_publish / mean_save,
    }


def main() -> Path:
    quiet.apply()
    training = {name: _train(m, d) for name, (m, d) in SIZES.items()}
    single = _train(*THREADS_PEER)
    default_threads = _train(*THREADS_PEER, default_threads=True)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        mlflow_part = _mlflow(Path(tmp) / "mlflow")
    payload = {
        "training": training,
        "training_1M_over_100k_rows_per_second": training["1M"]["rows_per_second"]
        / training["100k"]["rows_per_second"],
        "threads_peer": {"single_thread": single, "default_threads": default_threads},
        "single_thread_speedup_over_default_threads": single["rows_per_second"]
        / default_threads["rows_per_second"],
        "mlflow": mlflow_part,
    }
    path = write_results("training", payload)
    print(json.dumps(payload, indent=2, default=str))
    return path


if __name__ == "__main__":
    main()
