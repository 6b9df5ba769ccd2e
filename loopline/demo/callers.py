"""Traffic per caller, as the plant and its historian saw it: the live view's callers panel
and the e2e test's check on the model servers' usage table.

The usage table itself comes from the servers (`loopline.demo.usage`); this is the clients'
side of the same story: what each caller sent, and for the asynchronous historian, how many
requests still wait for their answer and how long the answers took.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from loopline.demo.record import AsyncSample, RequestSample


class CallerStats(BaseModel):
    """One caller over a window (or the whole run)."""

    model_config = ConfigDict(extra="forbid")

    caller: str
    protocol: str  # "rest", "grpc", "async"
    requests: int = 0
    rows: int = 0
    errors: int = 0
    waiting: int = 0  # async: accepted, no answer yet
    p50_ms: float | None = None  # sync: round trip; async: accepted to answer fetched


def _p50(values: list[float]) -> float | None:
    return float(np.percentile(np.asarray(values) * 1e3, 50)) if values else None


def caller_stats(
    requests: Sequence[RequestSample],
    async_requests: Sequence[AsyncSample],
    *,
    since: float = float("-inf"),
    until: float = float("inf"),
) -> list[CallerStats]:
    """Per caller (and protocol), the requests sent between `since` and `until`."""
    out: dict[tuple[str, str], CallerStats] = {}
    latencies: dict[tuple[str, str], list[float]] = {}
    for r in requests:
        if not since <= r.t <= until:
            continue
        key = (r.caller or "-", r.protocol)
        stats = out.setdefault(key, CallerStats(caller=key[0], protocol=key[1]))
        stats.requests += 1
        stats.rows += r.rows
        stats.errors += 0 if r.ok else 1
        if r.ok:
            latencies.setdefault(key, []).append(r.latency_s)
    for a in async_requests:
        if not since <= a.t <= until:
            continue
        key = (a.caller or "-", "async")
        stats = out.setdefault(key, CallerStats(caller=key[0], protocol="async"))
        stats.requests += 1
        stats.rows += a.rows
        if a.status == "pending":
            stats.waiting += 1
        elif not a.ok:
            stats.errors += 1
        elif a.latency_s is not None:
            latencies.setdefault(key, []).append(a.latency_s)
    for key, stats in out.items():
        stats.p50_ms = _p50(latencies.get(key, []))
    return sorted(out.values(), key=lambda s: (s.protocol == "async", s.caller))


def answered_by(
    requests: Sequence[RequestSample], async_requests: Sequence[AsyncSample]
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(caller, version) -> (requests answered, rows, fallback rows), as the clients saw the
    answers: what the servers' usage table must say for the same callers."""
    out: dict[tuple[str, str], tuple[int, int, int]] = {}

    def add(caller: str, version: str, rows: int, fallback: int) -> None:
        n, r, f = out.get((caller, version), (0, 0, 0))
        out[caller, version] = (n + 1, r + rows, f + fallback)

    for s in requests:
        if s.ok:
            add(s.caller, s.model_version, s.rows, s.fallback_rows)
    for a in async_requests:
        if a.ok:
            add(a.caller, a.model_version, a.rows, a.fallback_rows)
    return out
