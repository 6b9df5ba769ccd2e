"""The operator's /metrics: scheduled batch runs in the model usage series.

Model servers count their requests in `loopline_usage_*`; a batch run is no request to a
server, and the process that scores it is gone before a Prometheus would scrape it. The
operator follows every scheduled run to its end and counts it, once, into the Model's
`status.batch.usage` in the status write that ends it (`builders/batch_usage.py`). This
collector exports those totals, read from the operator's object cache at each scrape, as the
same series with `source="batch"` and `caller="schedule"`: a restarted operator exports the
same values again, so Prometheus sees neither a reset nor a repeat. A Model's own
`namespace` label is set here, so the operator's scrape must keep it (`honorLabels`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from loopline.operators.builders.batch_usage import SCHEDULE_CALLER
from loopline.types.batch import BatchUsage

SOURCE = "batch"
LABELS = ["model", "namespace", "version", "caller", "source"]


def _usage(body: Mapping[str, Any]) -> list[BatchUsage]:
    entries = (((body.get("status") or {}).get("batch") or {}).get("usage")) or []
    usage = []
    for entry in entries:
        try:
            usage.append(BatchUsage.model_validate(entry))
        except ValueError:  # an entry edited by hand: skip it, never fail the scrape
            continue
    return usage


def families(models: Iterable[Mapping[str, Any]]) -> list[Metric]:
    """The usage families of these Model bodies' scheduled batch runs."""
    requests = CounterMetricFamily(
        "loopline_usage_requests",
        "Inference requests by model, version, caller and outcome; scheduled batch runs "
        "(source batch) count one per run.",
        labels=[*LABELS, "outcome"],
    )
    rows = CounterMetricFamily(
        "loopline_usage_rows", "Rows scored, by model, version and caller.", labels=LABELS
    )
    fallback = CounterMetricFamily(
        "loopline_usage_fallback_rows",
        "Rows scored by the core-sensor fallback model, by model, version and caller.",
        labels=LABELS,
    )
    for body in models:
        meta = body.get("metadata") or {}
        model, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
        totals: dict[str, list[int]] = {}
        for u in _usage(body):
            key = [model, namespace, u.version, SCHEDULE_CALLER, SOURCE]
            requests.add_metric([*key, u.outcome], u.runs)
            sums = totals.setdefault(u.version, [0, 0])
            sums[0] += u.rows
            sums[1] += u.fallback_rows
        for version, (scored, by_fallback) in sorted(totals.items()):
            key = [model, namespace, version, SCHEDULE_CALLER, SOURCE]
            rows.add_metric(key, scored)
            fallback.add_metric(key, by_fallback)
    return [requests, rows, fallback]


class BatchUsageCollector(Collector):
    def __init__(self, models: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        yield from families(self.models())


def batch_usage_registry(models: Callable[[], Iterable[Mapping[str, Any]]]) -> CollectorRegistry:
    """A registry of its own: the operator's /metrics shows these series and nothing else."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchUsageCollector(models))
    return registry
