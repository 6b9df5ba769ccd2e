"""Per-version canary statistics read from model servers' Prometheus metrics: how every
serving backend feeds `decide_canary` (loopline.operators.builders.canary).

A Model may be served by several processes (pods): each one's counters are read from its own
`/metrics` and summed. `StepWindows` keeps, per Model, the counters each server had when the
current canary step began, so a decision sees only the traffic of its step; a server that
appeared during the step counts whole (it had no traffic before), one that went away drops
out (fewer requests: the step holds longer, it is never judged on made-up numbers).
No Prometheus server is needed: the operator reads the servers it manages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loopline.operators.builders.canary import VersionStats

log = logging.getLogger(__name__)


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


def total(stats: list[VersionStats]) -> VersionStats:
    """The counters of several servers of one version, added up."""
    buckets: dict[float, float] = {}
    for s in stats:
        for bound, count in s.latency_buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    return VersionStats(
        requests=sum(s.requests for s in stats),
        server_errors=sum(s.server_errors for s in stats),
        rows=sum(s.rows for s in stats),
        fallback_rows=sum(s.fallback_rows for s in stats),
        anomaly_rows=sum(s.anomaly_rows for s in stats),
        latency_buckets=buckets,
    )


def scrape(urls: Mapping[str, str], *, timeout: float = 2.0) -> dict[str, str]:
    """server name -> its /metrics text; a server that cannot be read is left out (logged)."""
    texts: dict[str, str] = {}
    for server, url in urls.items():
        try:
            response = httpx.get(url, timeout=timeout, trust_env=False)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("cannot read canary traffic of %s from %s: %s", server, url, exc)
            continue
        texts[server] = response.text
    return texts


Step = tuple[str, int]  # (canary version, weight): a new step starts a new window


class StepWindows:
    """Per Model, each server's counters at the start of the current canary step."""

    def __init__(self) -> None:
        self._baselines: dict[str, tuple[Step, dict[str, tuple[VersionStats, VersionStats]]]] = {}
        self._lock = threading.Lock()

    def window(
        self,
        key: str,
        step: Step,
        texts: Mapping[str, str],
        *,
        model: str,
        champion_version: str,
        canary_version: str,
    ) -> tuple[VersionStats, VersionStats] | None:
        """(champion, canary) traffic since `step` began, summed over the servers read now;
        None when no server could be read."""
        if not texts:
            return None
        now = {
            server: (
                version_stats(text, model, champion_version),
                version_stats(text, model, canary_version),
            )
            for server, text in texts.items()
        }
        with self._lock:
            known = self._baselines.get(key)
            if known is None or known[0] != step:
                self._baselines[key] = (step, dict(now))
                zero = VersionStats()
                return zero, zero
            baselines = known[1]
            for server in now:
                baselines.setdefault(server, (VersionStats(), VersionStats()))
        champion = [c.minus(baselines[s][0]) for s, (c, _) in now.items()]
        canary = [k.minus(baselines[s][1]) for s, (_, k) in now.items()]
        return total(champion), total(canary)

    def forget(self, key: str) -> None:
        with self._lock:
            self._baselines.pop(key, None)
