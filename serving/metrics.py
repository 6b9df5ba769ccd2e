"""Prometheus metrics of the model server, registered where MLServer's metrics port serves them.

MLServer exposes prometheus_client's default registry on its metrics port when it runs models
in its own process (`parallel_workers: 0`, Loopline's default) and a multiprocess collector
otherwise; metrics created at model load time land in the right one either way. Tests pass a
fresh `CollectorRegistry`, so nothing leaks between them.

Several models in one server share one set of metrics (told apart by the `model` and
`version` labels), hence one `ServingMetrics` per registry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from loopline.serving.callers import CallerLabels, sanitize

LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServingMetrics:
    """The `loopline_*` series of one model server (Prometheus conventions: base units, `_total`, `_seconds`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "loopline_inference_requests_total",
            "Inference requests by model, version, protocol and outcome (ok, client_error, "
            "server_error).",
            ["model", "version", "protocol", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "loopline_inference_latency_seconds",
            "Time inside the runtime per request: decode, score, encode.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "loopline_inference_batch_size",
            "Rows per scored request.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.rows = Counter(
            "loopline_scored_rows_total",
            "Rows scored, by model and version.",
            ["model", "version"],
            registry=registry,
        )
        self.fallback_rows = Counter(
            "loopline_fallback_rows_total",
            "Rows scored by the core-sensor fallback model (a non-core sensor missing or NaN).",
            ["model", "version"],
            registry=registry,
        )
        self.anomaly_rows = Counter(
            "loopline_anomaly_rows_total",
            "Rows the model flagged as anomalous (anomaly detection only).",
            ["model", "version"],
            registry=registry,
        )
        # Counted apart rather than as a label of the series above: the canary judgement reads
        # loopline_anomaly_rows_total, which keeps counting every anomalous row.
        self.stale_anomaly_rows = Counter(
            "loopline_stale_anomaly_rows_total",
            "Of loopline_anomaly_rows_total, the rows answered while the drift monitor "
            "reported confirmed drift against this version (model_state stale).",
            ["model", "version"],
            registry=registry,
        )
        self.alarm_events = Counter(
            "loopline_alarm_events_total",
            "Debounced alarm events raised per entity (spec.alarms), by the model_state of "
            "the version that raised them (ok, stale, unknown).",
            ["model", "version", "state"],
            registry=registry,
        )
        self.version_info = Gauge(
            "loopline_model_version_info",
            "1 for each model version this server has loaded, with its role and task.",
            ["model", "version", "role", "task"],
            registry=registry,
            multiprocess_mode="max",
        )
        # Model usage: who called which version, how often, with what result. A family of its
        # own (not a `caller` label on the series above) so that the canary judgement and the
        # serving dashboards keep their series, and the caller label stays bounded
        # (`callers.CallerLabels`).
        self.usage_requests = Counter(
            "loopline_usage_requests_total",
            "Inference requests by model, version, caller and outcome (ok, client_error, "
            "server_error).",
            ["model", "version", "caller", "outcome"],
            registry=registry,
        )
        self.usage_rows = Counter(
            "loopline_usage_rows_total",
            "Rows scored, by model, version and caller.",
            ["model", "version", "caller"],
            registry=registry,
        )
        self.usage_fallback_rows = Counter(
            "loopline_usage_fallback_rows_total",
            "Rows scored by the core-sensor fallback model, by model, version and caller.",
            ["model", "version", "caller"],
            registry=registry,
        )
        self.usage_latency = Histogram(
            "loopline_usage_latency_seconds",
            "Time inside the runtime per answered request, by model, version and caller.",
            ["model", "version", "caller"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._callers: dict[str, CallerLabels] = {}
        self.samples = Counter(
            "loopline_samples_total",
            "Sample batches for the drift monitor by outcome (sent, failed, dropped).",
            ["model", "outcome"],
            registry=registry,
        )

    def callers(self, model: str, allowed: Sequence[str], max_callers: int) -> CallerLabels:
        """The caller labels of `model`, kept across reloads of the model (so a reload does
        not open a new budget of distinct callers) unless its caller settings changed."""
        found = self._callers.get(model)
        if (
            found is None
            or found.allowed != frozenset(map(sanitize, allowed))
            or found.max_callers != max_callers
        ):
            found = self._callers[model] = CallerLabels(allowed, max_callers)
        return found


_lock = threading.Lock()
# Keyed by the registry itself, weakly: keyed by id(), a registry freed by one test handed
# its id to the next test's new registry, which then got metrics registered in the dead one.
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ServingMetrics] = (
    weakref.WeakKeyDictionary()
)


def serving_metrics(registry: CollectorRegistry | None = None) -> ServingMetrics:
    """The metrics of `registry` (default: the process registry MLServer exposes)."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = ServingMetrics(registry)
        return found
