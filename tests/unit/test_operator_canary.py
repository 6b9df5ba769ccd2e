"""Canary decisions (pure) and reading them from a real metrics registry's text."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from loopline.operators.backends.canary_stats import version_stats
from loopline.operators.builders.canary import CanaryAction, VersionStats, decide_canary
from loopline.serving.metrics import serving_metrics
from loopline.types.model import AbortMetric, CanarySpec

SPEC = CanarySpec(
    steps=[10, 50, 100], step_seconds=60, abort_metric="error_rate", abort_threshold=0.05
)
HEALTHY = VersionStats(requests=100, server_errors=0, rows=100, anomaly_rows=5)


def test_holds_until_enough_requests_then_until_the_step_has_lasted() -> None:
    few = VersionStats(requests=5, rows=5)
    assert (
        decide_canary(SPEC, step_index=0, step_elapsed_s=999, champion=HEALTHY, canary=few).action
        == CanaryAction.HOLD
    )
    d = decide_canary(SPEC, step_index=0, step_elapsed_s=30, champion=HEALTHY, canary=HEALTHY)
    assert d.action == CanaryAction.HOLD
    assert d.weight == 10


def test_steps_through_the_percentages_then_promotes() -> None:
    d = decide_canary(SPEC, step_index=0, step_elapsed_s=61, champion=HEALTHY, canary=HEALTHY)
    assert (d.action, d.step_index, d.weight) == (CanaryAction.STEP, 1, 50)
    d = decide_canary(SPEC, step_index=2, step_elapsed_s=61, champion=HEALTHY, canary=HEALTHY)
    assert (d.action, d.weight) == (CanaryAction.PROMOTE, 100)


def test_error_rate_over_budget_rolls_back_even_mid_step() -> None:
    bad = VersionStats(requests=100, server_errors=10, rows=100)
    d = decide_canary(SPEC, step_index=1, step_elapsed_s=1, champion=HEALTHY, canary=bad)
    assert (d.action, d.weight, d.step_index) == (CanaryAction.ROLLBACK, 0, -1)
    assert "error_rate 0.1 > abortThreshold 0.05" in d.reason


def test_anomaly_rate_jump_against_the_champion_rolls_back() -> None:
    spec = CanarySpec(abort_metric=AbortMetric.ANOMALY_RATE_DELTA, abort_threshold=0.1)
    jumpy = VersionStats(requests=100, rows=100, anomaly_rows=40)
    d = decide_canary(spec, step_index=0, step_elapsed_s=100, champion=HEALTHY, canary=jumpy)
    assert d.action == CanaryAction.ROLLBACK
    assert d.metric_value == pytest.approx(0.35)
    quiet = VersionStats(requests=100, rows=100, anomaly_rows=8)
    assert (
        decide_canary(spec, step_index=0, step_elapsed_s=100, champion=HEALTHY, canary=quiet).action
        == CanaryAction.STEP
    )


def test_latency_budget_uses_the_histogram() -> None:
    spec = CanarySpec(abort_metric=AbortMetric.LATENCY_P95_SECONDS, abort_threshold=0.005)
    slow = VersionStats(
        requests=100, rows=100, latency_buckets={0.001: 50, 0.005: 80, 0.01: 100, math.inf: 100}
    )
    d = decide_canary(spec, step_index=0, step_elapsed_s=100, champion=HEALTHY, canary=slow)
    assert d.action == CanaryAction.ROLLBACK
    assert d.metric_value == 0.01


def test_bad_step_index_is_refused() -> None:
    with pytest.raises(ValueError, match="step_index"):
        decide_canary(SPEC, step_index=3, step_elapsed_s=0, champion=HEALTHY, canary=HEALTHY)


def test_version_stats_read_the_servers_metrics_and_difference_windows() -> None:
    registry = CollectorRegistry()
    m = serving_metrics(registry)
    m.requests.labels("drill-ae", "3", "rest", "ok").inc(8)
    m.requests.labels("drill-ae", "3", "grpc", "server_error").inc(2)
    m.requests.labels("drill-ae", "2", "rest", "ok").inc(50)
    m.rows.labels("drill-ae", "3").inc(40)
    m.anomaly_rows.labels("drill-ae", "3").inc(4)
    m.fallback_rows.labels("drill-ae", "3").inc(1)
    for seconds in (0.0004, 0.0004, 0.004, 0.02):
        m.latency.labels("drill-ae", "3", "rest").observe(seconds)
    before = version_stats(generate_latest(registry).decode(), "drill-ae", "3")
    assert (before.requests, before.server_errors, before.rows) == (10, 2, 40)
    assert before.error_rate == 0.2
    assert before.anomaly_rate == 0.1
    assert before.latency_quantile(0.5) == 0.0005
    m.requests.labels("drill-ae", "3", "rest", "ok").inc(10)
    after = version_stats(generate_latest(registry).decode(), "drill-ae", "3")
    window = after.minus(before)
    assert (window.requests, window.server_errors) == (10, 0)
