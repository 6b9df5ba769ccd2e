"""One `ServingMetrics` per registry, and always the given registry's."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from loopline.serving.metrics import serving_metrics


def test_a_new_registry_never_gets_a_freed_registrys_metrics() -> None:
    """CPython hands a freed object's id to the next object of its size. When the cache was
    keyed by id(), a test's fresh registry could get the metrics of an earlier, freed one,
    and its samples went nowhere (a CI run failed that way)."""
    ids = set()
    for i in range(50):
        registry = CollectorRegistry()
        ids.add(id(registry))
        metrics = serving_metrics(registry)
        assert serving_metrics(registry) is metrics
        metrics.rows.labels("m", str(i)).inc(3)
        assert (
            registry.get_sample_value(
                "loopline_scored_rows_total", {"model": "m", "version": str(i)}
            )
            == 3
        )
        del registry, metrics
        gc.collect(1)  # the young generations: a full collection costs seconds in a big session
    assert len(ids) < 50  # the ids were reused, so the case above was exercised
