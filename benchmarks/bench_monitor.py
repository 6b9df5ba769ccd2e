"""Drift monitor: throughput, decision latency, and detection delay on recipe changes.

1. Throughput and decision latency for 16 features at window sizes 500 / 2000 / 10000 (step
   half a window, 1 % missing values), on the bodies the lean server's sampler POSTs
   (`loopline.serving.sampling.to_sample_batch`, 250 rows each):
   - end to end: every body through the monitor's ASGI app in process (bearer-token check,
     routing, parsing, queueing) while the monitor's worker thread tests the windows, as
     deployed; until every window is tested and its state written. uvicorn's HTTP parsing and the
     client are not in it.
   - sequential: the same, but each request is followed by `process()` on the same thread, so
     every window pays its own state write (fsync): the worst case.
   - decision latency: one window's test, decision and metrics (`_test_window`), and apart from
     it the atomic state write, which is once per drained batch of windows. The peer measured in
     the same run on the same windows and reference is alibi-detect's bare `KSDrift.predict`;
     the ratios are what the monitor costs against the bare test. MMD (pytorch, subsampled to
     500 rows a side) latency is reported alongside.
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
from loopline.samples import SAMPLES_PATH

FEATURES = 16
REFERENCE_ROWS = 5000
WINDOWS = (500, 2000, 10_000)
BATCH_ROWS = 250
SHIFTS = (0.02, 0.05, 0.10, 0.20)
E2E_ROWS = 50_000
WARMUP_BODIES = 4


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


def _sampler_bodies(x: np.ndarray, names: list[str], model: str, seed: int) -> list[bytes]:
    """What the lean server's sampler sends for requests of BATCH_ROWS rows, built by its code."""
    from loopline.serving.sampling import PendingSample, to_sample_batch

    rng = np.random.default_rng(seed)
    out = []
    for i in range(0, x.shape[0], BATCH_ROWS):
        rows = x[i : i + BATCH_ROWS]
        n = rows.shape[0]
        item = PendingSample(
            model_version="1",
            x=rows,
            machine_ids=[f"m{j % 10}" for j in range(i, i + n)],
            scores=rng.random(n),
            decisions=rng.random(n) < 0.05,
            fallback=np.zeros(n, dtype=bool),
        )
        out.append(to_sample_batch(model, names, item).model_dump_json(by_alias=True).encode())
    return out


class _Poster:
    """POSTs bodies to an ASGI app in process, as uvicorn would hand them over."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.headers = [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ]

    async def post(self, path: str, body: bytes) -> int:
        import asyncio

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8090),
        }
        delivered = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        return status[0]


def _monitor(window: int, rows: int, reference: pd.DataFrame, state_dir: Path) -> Any:
    from loopline.monitoring.reference import FrameReferenceSource
    from loopline.monitoring.retrain import LogRetrainRequester
    from loopline.monitoring.service import DriftMonitor
    from loopline.monitoring.settings import MonitorSettings

    settings = MonitorSettings(
        model="bench",
        window_size=window,
        window_step=window // 2,
        queue_rows=rows,
        state_dir=state_dir,
        reference_poll_seconds=0,
        requester="log",
        min_feature_rows=20,
    )
    return DriftMonitor(
        settings,
        reference_source=FrameReferenceSource(reference, version="1"),
        requester=LogRetrainRequester(),
    )


def _timed(monitor: Any, name: str, into: list[float]) -> None:
    original = getattr(monitor, name)

    def timed() -> None:
        start = time.perf_counter()
        original()
        into.append(time.perf_counter() - start)

    setattr(monitor, name, timed)


def throughput(window: int, tmp: Path) -> dict[str, Any]:
    import asyncio

    from alibi_detect.cd import KSDrift

    from loopline.monitoring.app import create_app

    rng = np.random.default_rng(window)
    names = [f"f{i:02d}" for i in range(FEATURES)]
    reference = pd.DataFrame(rng.normal(size=(REFERENCE_ROWS, FEATURES)), columns=names)
    step = window // 2
    tests = 12
    rows = window + step * (tests - 1)
    live = rng.normal(size=(rows, FEATURES))
    live[rng.random(live.shape) < 0.01] = np.nan  # 1 % missing values, as sensors drop out
    bodies = _sampler_bodies(live, names, "bench", seed=window)
    token = "bench-token"

    # End to end, as deployed: requests on the event loop, testing on the worker thread. The
    # bodies are replayed to at least E2E_ROWS rows, so one slow fsync on a shared disk does
    # not decide the number; a first pass of REPLAY bodies warms the app and the detector up.
    passes = max(1, -(-E2E_ROWS // rows))
    total = rows * passes
    windows = (total - window) // step + 1
    monitor = _monitor(window, total, reference, tmp / f"w{window}-e2e")
    poster = _Poster(create_app(monitor, token=token, manage=False), token)

    async def post_all(replay: list[bytes]) -> float:
        spent = 0.0
        for body in replay:
            s = time.perf_counter()
            assert await poster.post(SAMPLES_PATH, body) == 202
            spent += time.perf_counter() - s
        return spent

    monitor.start()
    asyncio.run(post_all(bodies[:WARMUP_BODIES]))
    while not monitor.idle() or monitor._dirty:
        time.sleep(0.002)
    warm = monitor.state.windows_tested
    start = time.perf_counter()
    ingest = asyncio.run(post_all(bodies * passes))
    while monitor.state.windows_tested < warm + windows or not monitor.idle() or monitor._dirty:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    monitor.stop()
    assert monitor.dropped == 0, monitor.dropped

    # Sequential: each request, then process() on the same thread; decision and write timed.
    monitor = _monitor(window, rows, reference, tmp / f"w{window}-seq")
    poster = _Poster(create_app(monitor, token=token, manage=False), token)
    latencies: list[float] = []
    writes: list[float] = []
    _timed(monitor, "_test_window", latencies)

    async def post_and_process() -> None:
        for body in bodies:
            assert await poster.post(SAMPLES_PATH, body) == 202
            monitor.process()

    _timed(monitor, "persist", writes)
    start = time.perf_counter()
    asyncio.run(post_and_process())
    sequential = time.perf_counter() - start
    assert monitor.state.windows_tested == tests, monitor.state.windows_tested
    writes = list(writes)  # stop() writes once more; that one is not a window's
    monitor.stop()

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
    decision, write, bare = (float(np.median(v)) for v in (latencies, writes, peer))
    return {
        "window_rows": window,
        "step_rows": step,
        "features": FEATURES,
        "rows": rows,
        "batch_rows": BATCH_ROWS,
        "windows_tested": tests,
        "end_to_end_rows": total,
        "rows_per_second_end_to_end": total / elapsed,
        "rows_per_second_sequential": rows / sequential,
        "rows_per_second_into_http_app": total / ingest,
        "rows_per_second_into_detector": tests * window / sum(latencies),
        "decision_latency": percentiles(latencies),
        "state_write_latency": percentiles(writes),
        "peer_ksdrift_predict": percentiles(peer),
        "latency_ratio_vs_bare_ksdrift": decision / bare,
        "latency_ratio_with_state_write_vs_bare_ksdrift": (decision + write) / bare,
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
            f"   window {r['window_rows']:>6}: {r['rows_per_second_end_to_end']:>9,.0f} rows/s "
            f"end to end ({r['rows_per_second_sequential']:,.0f} sequential), decision p50 "
            f"{r['decision_latency']['p50_ms']:.1f} ms = "
            f"{r['latency_ratio_vs_bare_ksdrift']:.2f}x bare KSDrift "
            f"({r['latency_ratio_with_state_write_vs_bare_ksdrift']:.2f}x with a state write), "
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
                "end to end = sampler bodies through the monitor's ASGI app in process while its "
                "worker thread tests, until all windows are tested and written; sequential = "
                "process() after each request (a state write per window); decision latency = "
                "one window: KS per feature on non-missing values, decision, metrics; state "
                "write = the atomic state file, once per drained batch of windows; peer = "
                "alibi-detect KSDrift.predict alone on the same windows, same run"
            ),
        },
    )


if __name__ == "__main__":
    print(main())
