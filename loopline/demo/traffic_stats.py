"""Traffic over a window or a scenario segment, computed from a demo record's request samples.

Apart from the record itself because the record is data and this is arithmetic over it: the
live view and the report call it, the record's `traffic_stats` too.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from loopline.demo.record import DemoRecord, RequestSample


class TrafficStats(BaseModel):
    """Traffic over a window: what the live view shows and the report tabulates."""

    model_config = ConfigDict(extra="forbid")

    requests: int
    rows: int
    errors: int
    request_rate: float  # requests/s
    row_rate: float  # rows/s
    p50_ms: float | None
    p99_ms: float | None
    anomaly_rate: float | None  # anomalous rows / rows scored
    fallback_rate: float | None  # rows scored by the fallback / rows scored
    held_back_rate: float | None = None  # anomalous rows of a stale model / rows scored
    alarm_events: int = 0  # alarm events started

    @classmethod
    def of(cls, samples: list[RequestSample], window_s: float) -> TrafficStats:
        ok = [s for s in samples if s.ok]
        rows = sum(s.rows for s in ok)
        latencies = np.asarray([s.latency_s for s in ok], dtype=np.float64) * 1e3
        return cls(
            requests=len(samples),
            rows=rows,
            errors=len(samples) - len(ok),
            request_rate=len(samples) / window_s if window_s > 0 else 0.0,
            row_rate=rows / window_s if window_s > 0 else 0.0,
            p50_ms=float(np.percentile(latencies, 50)) if latencies.size else None,
            p99_ms=float(np.percentile(latencies, 99)) if latencies.size else None,
            anomaly_rate=sum(s.anomalies for s in ok) / rows if rows else None,
            fallback_rate=sum(s.fallback_rows for s in ok) / rows if rows else None,
            held_back_rate=sum(s.stale_anomalies for s in ok) / rows if rows else None,
            alarm_events=sum(len(s.alarm_starts) for s in ok),
        )


def segment_stats(record: DemoRecord) -> dict[str, TrafficStats]:
    """Traffic per scenario segment over its whole duration (for the report's table)."""
    by_segment: dict[str, list[RequestSample]] = {}
    for sample in record.requests:
        by_segment.setdefault(sample.segment or "-", []).append(sample)
    out = {}
    for name, samples in by_segment.items():
        duration = max(samples[-1].t - samples[0].t, 1e-9) if len(samples) > 1 else 1.0
        out[name] = TrafficStats.of(samples, duration)
    return out


def recent(items: list[Any], n: int) -> list[Any]:
    """The last `n` items (a copy), for bounded views of long lists."""
    return list(deque(items, maxlen=n))
