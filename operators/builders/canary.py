"""Canary rollout decisions as a pure function, and the statistics they are made from.

The operator calls `decide_canary` on every reconcile with the Model's `serving.canary` spec,
where the rollout stands, and per-version statistics over the current step (`VersionStats`,
read by the serving backend from a model server's metrics and differenced with `minus`):

- the abort metric over its threshold -> ROLLBACK (canary weight 0);
- too few canary requests to judge -> HOLD;
- the step has not lasted `stepSeconds` -> HOLD;
- otherwise STEP to the next percentage, or PROMOTE after the last one (100).

Abort metrics: `error_rate` (server errors / requests), `latency_p95_seconds` (from the
latency histogram), `fallback_rate` (fallback rows / rows), and `anomaly_rate_delta` (the
absolute difference between canary and champion anomaly rates: a jump either way means the
new model sees the same plant differently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from loopline.types.model import AbortMetric, CanarySpec


class CanaryAction(StrEnum):
    HOLD = "hold"
    STEP = "step"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class VersionStats:
    """Counters of one version over a window; latency buckets are cumulative (le -> count)."""

    requests: float = 0.0
    server_errors: float = 0.0
    rows: float = 0.0
    fallback_rows: float = 0.0
    anomaly_rows: float = 0.0
    latency_buckets: dict[float, float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    @property
    def anomaly_rate(self) -> float | None:
        return self.anomaly_rows / self.rows if self.rows else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallback_rows / self.rows if self.rows else None

    def latency_quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile q (as Prometheus' histogram_quantile
        without interpolation: conservative for a budget check)."""
        if not self.latency_buckets:
            return None
        total = self.latency_buckets.get(math.inf, max(self.latency_buckets.values()))
        if total <= 0:
            return None
        for bound in sorted(self.latency_buckets):
            if self.latency_buckets[bound] >= q * total:
                return bound
        return math.inf

    def minus(self, earlier: VersionStats) -> VersionStats:
        """The window between two scrapes (counters only grow; a restart resets them)."""

        def d(a: float, b: float) -> float:
            return a - b if a >= b else a

        return VersionStats(
            requests=d(self.requests, earlier.requests),
            server_errors=d(self.server_errors, earlier.server_errors),
            rows=d(self.rows, earlier.rows),
            fallback_rows=d(self.fallback_rows, earlier.fallback_rows),
            anomaly_rows=d(self.anomaly_rows, earlier.anomaly_rows),
            latency_buckets={
                k: d(v, earlier.latency_buckets.get(k, 0.0))
                for k, v in self.latency_buckets.items()
            },
        )


@dataclass(frozen=True)
class CanaryDecision:
    action: CanaryAction
    step_index: int  # index into spec.steps after the action (-1 after a rollback)
    weight: int  # canary traffic percentage after the action
    reason: str
    metric_value: float | None = None


def abort_metric_value(
    metric: AbortMetric, champion: VersionStats, canary: VersionStats
) -> float | None:
    if metric == AbortMetric.ERROR_RATE:
        return canary.error_rate
    if metric == AbortMetric.LATENCY_P95_SECONDS:
        return canary.latency_quantile(0.95)
    if metric == AbortMetric.FALLBACK_RATE:
        return canary.fallback_rate
    if metric == AbortMetric.ANOMALY_RATE_DELTA:
        a, b = canary.anomaly_rate, champion.anomaly_rate
        return None if a is None or b is None else abs(a - b)
    raise ValueError(f"unknown abort metric {metric!r}")


def decide_canary(
    spec: CanarySpec,
    *,
    step_index: int,
    step_elapsed_s: float,
    champion: VersionStats,
    canary: VersionStats,
    min_requests: int = 20,
) -> CanaryDecision:
    """The next move of a rollout standing at `spec.steps[step_index]` for `step_elapsed_s`."""
    steps = list(spec.steps)
    if not 0 <= step_index < len(steps):
        raise ValueError(f"step_index {step_index}: must be within 0..{len(steps) - 1}")
    weight = steps[step_index]
    metric = AbortMetric(spec.abort_metric)
    value = abort_metric_value(metric, champion, canary)
    if value is not None and canary.requests >= min_requests and value > spec.abort_threshold:
        return CanaryDecision(
            CanaryAction.ROLLBACK,
            -1,
            0,
            f"{metric.value} {value:.4g} > abortThreshold {spec.abort_threshold:g} at {weight}%",
            value,
        )
    if canary.requests < min_requests:
        return CanaryDecision(
            CanaryAction.HOLD,
            step_index,
            weight,
            f"{canary.requests:.0f} of {min_requests} canary requests needed to judge",
            value,
        )
    if step_elapsed_s < spec.step_seconds:
        return CanaryDecision(
            CanaryAction.HOLD,
            step_index,
            weight,
            f"step {weight}% held {step_elapsed_s:.0f} of {spec.step_seconds} s",
            value,
        )
    if step_index == len(steps) - 1:
        return CanaryDecision(
            CanaryAction.PROMOTE, step_index, 100, f"{metric.value} within budget at 100%", value
        )
    nxt = steps[step_index + 1]
    return CanaryDecision(
        CanaryAction.STEP,
        step_index + 1,
        nxt,
        f"{metric.value} within budget at {weight}%; stepping to {nxt}%",
        value,
    )
