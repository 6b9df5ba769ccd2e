"""The drift monitor's Prometheus metrics, in a registry of its own per monitor.

Names follow Prometheus conventions: `loopline_` prefix, base units, `_total` for counters,
`_seconds` for durations. A registry per monitor (not the process-global one) lets a test or a
process run several monitors, and gives each test fresh counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.p_value = Gauge(
            "loopline_drift_p_value",
            "p-value of the last window's drift test of a feature (1 when untested).",
            ["model", "feature"],
            registry=r,
        )
        self.statistic = Gauge(
            "loopline_drift_statistic",
            "Test statistic of the last window per feature (KS distance).",
            ["model", "feature"],
            registry=r,
        )
        self.detected = Gauge(
            "loopline_drift_detected",
            "1 when the last tested window drifted, else 0.",
            ["model"],
            registry=r,
        )
        self.feature_detected = Gauge(
            "loopline_drift_feature_detected",
            "1 when the feature drifted in the last tested window, else 0.",
            ["model", "feature"],
            registry=r,
        )
        self.consecutive = Gauge(
            "loopline_drift_consecutive_windows",
            "Drifted windows in a row so far.",
            ["model"],
            registry=r,
        )
        self.windows = Counter(
            "loopline_drift_windows_total",
            "Windows tested, by outcome (drift or stable).",
            ["model", "outcome"],
            registry=r,
        )
        self.window_rows = Gauge(
            "loopline_monitor_window_rows",
            "Rows in the sliding window.",
            ["model"],
            registry=r,
        )
        self.queue_rows = Gauge(
            "loopline_monitor_queue_rows",
            "Rows received and waiting for the detector.",
            ["model"],
            registry=r,
        )
        self.received = Counter(
            "loopline_monitor_samples_received_total",
            "Sampled rows received from model servers.",
            ["model"],
            registry=r,
        )
        self.dropped = Counter(
            "loopline_monitor_samples_dropped_total",
            "Sampled rows dropped because the queue was full (oldest first).",
            ["model"],
            registry=r,
        )
        self.missing = Counter(
            "loopline_monitor_missing_values_total",
            "Missing (None/NaN) sensor values received, excluded from the tests.",
            ["model", "feature"],
            registry=r,
        )
        self.anomaly_rate = Gauge(
            "loopline_monitor_anomaly_rate",
            "Share of recent sampled rows the model called anomalous (0..1).",
            ["model"],
            registry=r,
        )
        self.scored = Counter(
            "loopline_monitor_scored_rows_total",
            "Sampled rows with a model decision, by machine.",
            ["model", "machine"],
            registry=r,
        )
        self.anomalies = Counter(
            "loopline_monitor_anomalies_total",
            "Sampled rows the model called anomalous, by machine.",
            ["model", "machine"],
            registry=r,
        )
        self.retraining = Counter(
            "loopline_retraining_requests_total",
            "Retraining requests raised on the Model, by trigger.",
            ["model", "trigger"],
            registry=r,
        )
        self.cooldown = Gauge(
            "loopline_monitor_cooldown_remaining_seconds",
            "Time until drift may raise another retraining request.",
            ["model"],
            registry=r,
        )
        self.reference_rows = Gauge(
            "loopline_monitor_reference_rows",
            "Rows in the reference sample.",
            ["model"],
            registry=r,
        )
        self.reference_info = Gauge(
            "loopline_monitor_reference_info",
            "1 for the model version whose training data is the reference.",
            ["model", "version"],
            registry=r,
        )
        self.check_duration = Histogram(
            "loopline_drift_check_duration_seconds",
            "Time to test one window.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
