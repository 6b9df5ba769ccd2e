"""Drift monitor: throughput, decision latency, and detection delay on recipe changes.

1. Throughput (rows/s into the detector) and decision latency for 16 features at window sizes
   500 / 2000 / 10000, through the whole `DriftMonitor` (pydantic batches in, queue, window,
   KS with missing-value handling, decision, atomic state file). The peer measured in the same
   run is alibi-detect's bare `KSDrift.predict` on the same windows: the ratio is what the
   monitor's bookkeeping costs on top of the test itself. MMD (pytorch, subsampled to 500
   rows a side) latency is reported alongside.
2. Detection delay: generated plant traffic (10 machines, a reading per 10 min, window = one
   day = 1440 rows, step 360, K = 3) with recipe changes of several sizes; rows after the
   change until the retraining request, and drifted windows before the change (false alarms).
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import percentiles, write_results
from loopline import quiet

FEATURES = 16
REFERENCE_ROWS = 5000
WINDOWS = (500, 2000, 10_000)
BATCH_ROWS = 250
SHIFTS = (0.02, 0.05, 0.10, 0.20)


def _batches(x: np.ndarray, names: list[str], model: str) -> list[Any]:
    from loopline.samples import SampleBatch

    return [
        SampleBatch(
            model=model,
            model_version="1",
            feature_names=names,
            rows=x[i : i + BATCH_ROWS].tolist(),
        )
        for i in range(0, x.shape[0], BATCH_ROWS)
    ]


def throughput(window: int, tmp: Path) -> dict[str, Any]:
    from alibi_detect.cd import KSDrift

    from loopline.monitoring.reference import FrameReferenceSource
    from loopline.monitoring.retrain import LogRetrainRequester
    from loopline.monitoring.service import DriftMonitor
    from loopline.monitoring.settings import MonitorSettings

    rng = np.random.default_rng(window)
    names = [f"f{i:02d}" for i in range(FEATURES)]
    reference = pd.DataFrame(rng.normal(size=(REFERENCE_ROWS, FEATURES)), columns=names)
    step = window // 2
    tests = 12
    rows = window + step * (tests - 1)
    live = rng.normal(size=(rows, FEATURES))
    live[rng.random(live.shape) < 0.01] = np.nan  # 1 % missing values, as sensors drop out
    batches = _batches(live, names, "bench")
    settings = MonitorSettings(
        model="bench",
        window_size=window,
        window_step=step,
        queue_rows=rows,
        state_dir=tmp / f"w{window}",
        persist_seconds=3600,
        reference_poll_seconds=0,
        requester="log",
        min_feature_rows=20,
    )
    monitor = DriftMonitor(
        settings,
        reference_source=FrameReferenceSource(reference, version="1"),
        requester=LogRetrainRequester(),
    )
    latencies: list[float] = []
    original = monitor._test_window

    def timed() -> None:
        start = time.perf_counter()
        original()
        latencies.append(time.perf_counter() - start)

    monitor._test_window = timed
    start = time.perf_counter()
    for batch in batches:
        monitor.submit(batch)
        monitor.process()
    elapsed = time.perf_counter() - start
    assert monitor.state.windows_tested == tests, monitor.state.windows_tested

    # peer: alibi-detect's KSDrift alone on the same windows (NaN-free copy: it cannot skip NaN)
    clean = np.nan_to_num(live, nan=0.0).astype(np.float32)
    ks = KSDrift(reference.to_numpy(np.float32), p_val=0.01)
    peer: list[float] = []
    for t in range(tests):
        x = clean[t * step : t * step + window]
        s = time.perf_counter()
        ks.predict(x)
        peer.append(time.perf_counter() - s)

    from loopline.monitoring.detectors import build_detector

    mmd = build_detector("mmd", reference.to_numpy(), names, permutations=100, max_rows=500)
    mmd_lat = [mmd.test(live[:window]).duration_seconds]  # subsampled: ~flat in window size
    monitor.stop()
    return {
        "window_rows": window,
        "step_rows": step,
        "features": FEATURES,
        "rows": rows,
        "windows_tested": tests,
        "rows_per_second_end_to_end": rows / elapsed,
        "rows_per_second_into_detector": tests * window / sum(latencies),
        "decision_latency": percentiles(latencies),
        "peer_ksdrift_predict": percentiles(peer),
        "latency_ratio_vs_bare_ksdrift": float(np.median(latencies) / np.median(peer)),
        "mmd_decision_latency": percentiles(mmd_lat),
    }


def detection_delay(tmp: Path) -> list[dict[str, Any]]:
    from loopline.data.generator import GeneratorConfig, generate, live_traffic
    from loopline.data.schema import IS_FAULT, SENSORS, TIMESTAMP
    from loopline.monitoring.reference import FrameReferenceSource
    from loopline.monitoring.retrain import LogRetrainRequester
    from loopline.monitoring.service import DriftMonitor
    from loopline.monitoring.settings import MonitorSettings

    history, manifest = generate(
        GeneratorConfig(machines=10, days=14, interval_seconds=600, seed=7, part_life_days=1.5)
    )
    normal = history[history[IS_FAULT] == 0]
    reference = normal.sample(REFERENCE_ROWS, random_state=0)[list(SENSORS)]
    out = []
    for shift in SHIFTS:
        change = manifest.end + timedelta(days=3)
        live, _ = live_traffic(
            manifest, minutes=9 * 1440, recipe_change_at=change, recipe_shift=shift
        )
        live = live.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
        change_row = int((live[TIMESTAMP] < change).sum())
        x = live[list(SENSORS)].to_numpy(np.float64)
        requester = LogRetrainRequester()
        monitor = DriftMonitor(
            MonitorSettings(
                model="bench",
                window_size=1440,
                window_step=360,
                consecutive_windows=3,
                state_dir=tmp / f"delay-{shift}",
                persist_seconds=3600,
                reference_poll_seconds=0,
                requester="log",
            ),
            reference_source=FrameReferenceSource(reference, version="1"),
            requester=requester,
        )
        names = list(SENSORS)
        detected_at = None
        windows_before = drifted_before = 0
        for i in range(0, x.shape[0], 40):
            for batch in _batches(x[i : i + 40], names, "bench"):
                monitor.submit(batch)
            monitor.process()
            if i + 40 <= change_row:
                windows_before = monitor.state.windows_tested
                drifted_before = monitor.state.drifted_windows
            if requester.requests and detected_at is None:
                detected_at = min(i + 40, x.shape[0])
                break
        monitor.stop()
        out.append(
            {
                "recipe_shift": shift,
                "change_row": change_row,
                "detected": detected_at is not None and detected_at > change_row,
                "delay_rows": None if detected_at is None else detected_at - change_row,
                "delay_hours_of_plant_time": None
                if detected_at is None
                else (detected_at - change_row) / 10 * 600 / 3600,
                "features": requester.requests[0].features if requester.requests else [],
                "windows_before_change": windows_before,
                "false_alarm_windows_before_change": drifted_before,
            }
        )
    return out


def main() -> Path:
    quiet.apply()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        root = Path(tmp)
        rows = [throughput(w, root) for w in WINDOWS]
        delays = detection_delay(root)
    for r in rows:
        print(
            f"   window {r['window_rows']:>6}: {r['rows_per_second_into_detector']:>10,.0f} rows/s "
            f"into the detector, decision p50 {r['decision_latency']['p50_ms']:.1f} ms "
            f"({r['latency_ratio_vs_bare_ksdrift']:.2f}x bare KSDrift), "
            f"MMD p50 {r['mmd_decision_latency']['p50_ms']:.0f} ms"
        )
    for d in delays:
        print(
            f"   recipe shift {d['recipe_shift']:+.0%}: delay {d['delay_rows']} rows, "
            f"false alarms {d['false_alarm_windows_before_change']}/{d['windows_before_change']}"
        )
    return write_results(
        "monitor",
        {
            "throughput_and_latency": rows,
            "detection_delay": delays,
            "notes": (
                "decision latency = one window: KS per feature on non-missing values, decision, "
                "metrics, atomic state write; peer = alibi-detect KSDrift.predict alone"
            ),
        },
    )


if __name__ == "__main__":
    print(main())
