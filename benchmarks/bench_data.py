"""Data side: generator throughput, historical retrieval, online lookups, the quality gate.

Each number comes with a peer measured in the same run:

- generator rows/s, against drawing the same number of normal variates with numpy (the floor
  of any generator that adds noise to every reading);
- historical retrieval (point-in-time join) of all rows through Loopline's as-of store, and on
  a small repository against Feast's stock dask `file` store (its join costs rows x
  rows-per-entity, so only a small data set is feasible for it);
- online lookup p50/p99 of one machine and of ten (the in-process cache), against Feast's
  stock online read of the same store (benchmarks/bench_online.py measures it in detail,
  three runs and a floor);
- the quality gate on all rows, against plain pandas computing the same null/range/duplicate
  counts (what Great Expectations' bookkeeping costs on top).

`python -m benchmarks.bench_data --rows 200000` for a quicker run; the default is 1M rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import percentiles, time_calls, write_results
from loopline import quiet
from loopline.data import features
from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.quality import reference_stats, run_gate
from loopline.data.schema import ENTITY, SENSORS, TIMESTAMP, factory_schema

DEFAULT_ROWS = 1_000_000
MACHINES = 24
STOCK_ROWS = 4_800  # 200 readings per machine


def _config(rows: int) -> GeneratorConfig:
    days = rows / MACHINES / 1440
    return GeneratorConfig(machines=MACHINES, days=days, interval_seconds=60, seed=1)


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_generator(cfg: GeneratorConfig) -> tuple[pd.DataFrame, Any, dict[str, Any]]:
    generate(cfg.model_copy(update={"days": 0.5}))  # warm imports and caches
    (frame, manifest), gen_s = _timed(lambda: generate(cfg))
    rng = np.random.default_rng(0)
    _, rng_s = _timed(lambda: rng.standard_normal((len(frame), len(SENSORS))))
    return (
        frame,
        manifest,
        {
            "rows": len(frame),
            "seconds": round(gen_s, 3),
            "rows_per_second": round(len(frame) / gen_s),
            "numpy_normals_seconds": round(rng_s, 3),
            "ratio_to_numpy_normals": round(gen_s / rng_s, 2),
            "events": len(manifest.events),
        },
    )


def bench_feast(frame: pd.DataFrame, manifest: Any, tmp: Path) -> dict[str, Any]:
    import feast  # noqa: F401  (import cost is not apply's)

    data = tmp / "data"
    parquet = write_dataset(frame, manifest, data)
    repo = tmp / "repo"
    spec, create_s = _timed(lambda: features.create_repo(repo, parquet, factory_schema()))
    store, apply_s = _timed(lambda: features.apply(repo))
    _, mat_s = _timed(lambda: features.materialize(repo, store=store))

    full, hist_s = _timed(lambda: features.get_training_frame(repo, "all_sensors", store=store))
    both, hist_rolling_s = _timed(
        lambda: features.get_training_frame(repo, "all_sensors_rolling", store=store)
    )
    assert len(full) == len(frame) == len(both)

    # Stock Feast store on a small repository (the first STOCK_ROWS rows): its join is
    # entity rows x source rows per entity, so the full data set is out of its reach.
    small = frame.iloc[:STOCK_ROWS]
    slices = {}
    for name, store_type in (("asof", None), ("stock", "file")):
        path = tmp / f"small-{name}"
        features.create_repo(path, small, factory_schema(), rolling=False)
        if store_type:
            yaml = (path / "feature_store.yaml").read_text()
            (path / "feature_store.yaml").write_text(
                yaml.replace(f"type: {features.OFFLINE_STORE_TYPE}", f"type: {store_type}")
            )
        small_store = features.apply(path)
        slices[name] = _timed(
            lambda p=path, s=small_store: features.get_training_frame(p, "all_sensors", store=s)
        )
    pd.testing.assert_frame_equal(slices["asof"][0], slices["stock"][0], check_dtype=False)
    ours_slice_s, stock_slice_s = slices["asof"][1], slices["stock"][1]

    ids = [f"drill-{i:02d}" for i in range(1, 11)]
    one_p = percentiles(
        time_calls(lambda: features.get_online_features(store, ["drill-07"]), repeat=1000)
    )
    ten_p = percentiles(time_calls(lambda: features.get_online_features(store, ids), repeat=500))
    # Feast's stock online read of the same store, the service resolved once (no frame built).
    service = store.get_feature_service("all_sensors")

    def stock(machines: list[str]) -> object:
        rows = [{ENTITY: m} for m in machines]
        return store.get_online_features(features=service, entity_rows=rows).to_dict()

    stock_one = percentiles(time_calls(lambda: stock(["drill-07"]), repeat=200))
    stock_ten = percentiles(time_calls(lambda: stock(ids), repeat=100))
    return {
        "create_repo_seconds": round(create_s, 3),
        "apply_seconds": round(apply_s, 3),
        "materialize_seconds": round(mat_s, 3),
        "historical": {
            "rows": len(full),
            "all_sensors_seconds": round(hist_s, 3),
            "all_sensors_rows_per_second": round(len(full) / hist_s),
            "with_rolling_view_seconds": round(hist_rolling_s, 3),
            "small_repo_rows": len(small),
            "small_repo_asof_seconds": round(ours_slice_s, 3),
            "small_repo_feast_stock_file_store_seconds": round(stock_slice_s, 3),
            "small_repo_speedup_over_stock": round(stock_slice_s / ours_slice_s, 1),
        },
        "online": {
            "one_machine": one_p,
            "ten_machines": ten_p,
            "one_machine_p50_over_ten_per_machine": round(
                one_p["p50_ms"] / (ten_p["p50_ms"] / 10), 2
            ),
            "feast_stock_one_machine": stock_one,
            "feast_stock_ten_machines": stock_ten,
            "feast_stock_over_loopline_p50": {
                "one": round(stock_one["p50_ms"] / one_p["p50_ms"], 1),
                "ten": round(stock_ten["p50_ms"] / ten_p["p50_ms"], 1),
            },
        },
        "rolling_features": len(spec.rolling_feature_names()),
    }


def bench_gate(frame: pd.DataFrame, end: Any) -> dict[str, Any]:
    schema = factory_schema()
    half = len(frame) // 2
    reference = reference_stats(frame.iloc[:half], schema)
    run_gate(frame.iloc[:2000], schema, reference=reference, window_end=end)  # imports, warm-up
    report, gate_s = _timed(lambda: run_gate(frame, schema, reference=reference, window_end=end))

    def plain() -> None:
        for f in schema.features:
            col = frame[f.name]
            col.isna().mean()
            col.between(f.min, f.max).mean()
        frame.duplicated([ENTITY, TIMESTAMP]).sum()

    _, plain_s = _timed(plain)
    return {
        "rows": len(frame),
        "seconds": round(gate_s, 3),
        "rows_per_second": round(len(frame) / gate_s),
        "passed": report.passed,
        "scores": report.scores(),
        "plain_pandas_checks_seconds": round(plain_s, 3),
        "ratio_to_plain_pandas": round(gate_s / plain_s, 1),
    }


def main(rows: int = DEFAULT_ROWS) -> Path:
    quiet.apply()
    cfg = _config(rows)
    frame, manifest, gen = bench_generator(cfg)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-data-") as tmp:
        feast = bench_feast(frame, manifest, Path(tmp))
    gate = bench_gate(frame, manifest.end)
    return write_results(
        "data",
        {
            "config": {"rows": rows, "machines": MACHINES, "interval_seconds": 60},
            "generator": gen,
            "feast": feast,
            "quality_gate": gate,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    print(main(parser.parse_args().rows))
