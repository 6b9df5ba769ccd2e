"""Per-version canary statistics read from a model server's Prometheus metrics: how the
serving backends feed `decide_canary` (loopline.operators.builders.canary)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from loopline.operators.builders.canary import VersionStats


def version_stats(metrics_text: str, model: str, version: str) -> VersionStats:
    """Read one version's `loopline_*` series from a server's /metrics text."""
    requests = errors = rows = fallback = anomalies = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("version") != version:
                continue
            name = sample.name
            if name == "loopline_inference_requests_total":
                requests += sample.value
                if labels.get("outcome") == "server_error":
                    errors += sample.value
            elif name == "loopline_scored_rows_total":
                rows += sample.value
            elif name == "loopline_fallback_rows_total":
                fallback += sample.value
            elif name == "loopline_anomaly_rows_total":
                anomalies += sample.value
            elif name == "loopline_inference_latency_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return VersionStats(requests, errors, rows, fallback, anomalies, buckets)
