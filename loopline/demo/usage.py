"""Model usage in the demo: a Prometheus that scrapes the model server and the drift monitor,
and the usage table read back from it the way `loopline usage` reads it.

The demo keeps no counters of its own for this table: the model server counts every request
per version and caller (`loopline_usage_*`), Prometheus scrapes it every second, and
`loopline.monitoring.usage.collect` (the code behind `loopline usage` and the "Model usage"
dashboard) turns the series into the table. The plant's own record of what it sent is then a
check on that table, which the e2e test makes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from loopline.demo.record import UsageEntry

SCRAPE_INTERVAL = "1s"
JOBS = {"Metrics": "loopline-model", "Monitor": "loopline-monitor"}


def scrape_target(url: str) -> tuple[str, str]:
    """`host:port` and the metrics path of an endpoint URL (`/metrics` when it names none)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname or not parsed.port:
        raise ValueError(f"endpoint {url!r} names no host and port to scrape")
    path = parsed.path.rstrip("/")
    return f"{parsed.hostname}:{parsed.port}", path if path.endswith(
        "/metrics"
    ) else path + "/metrics"


def prometheus_config(
    endpoints: Mapping[str, str], interval: str = SCRAPE_INTERVAL
) -> dict[str, Any]:
    """prometheus.yml scraping the Model's endpoints that have metrics (`Metrics`: the model
    server; `Monitor`: the drift monitor, whose reference says which version is champion)."""
    jobs = []
    for label, job in JOBS.items():
        url = endpoints.get(label)
        if not url:
            continue
        target, path = scrape_target(url)
        jobs.append(
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [target]}]}
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


def prometheus_argv(binary: str, folder: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


def write_config(folder: Path, endpoints: Mapping[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config(endpoints), sort_keys=False))
    return path


def local_metrics_url(serving_root: Path, namespace: str, model: str) -> str | None:
    """The metrics URL of the local serving backend's model server, from its settings file
    (`<serving root>/<namespace>/<model>/settings.json`, `loopline.serving.local`): the
    Model's status names its REST and gRPC endpoints, not the metrics port."""
    path = serving_root / namespace / model / "settings.json"
    try:
        doc = json.loads(path.read_text())
        return f"http://{doc.get('host') or '127.0.0.1'}:{int(doc['metrics_port'])}/metrics"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def entries(rows: Any) -> list[UsageEntry]:
    """`loopline.monitoring.usage.UsageRow`s as the record keeps them."""
    return [
        UsageEntry(
            version=r.version,
            caller=r.caller,
            requests=r.requests,
            errors=r.client_errors + r.server_errors,
            rows=r.rows,
            fallback_rows=r.fallback_rows,
            p50_s=r.p50_seconds,
            p95_s=r.p95_seconds,
            p99_s=r.p99_seconds,
            retired=r.retired,
        )
        for r in rows
    ]


def read_usage(
    url: str, model: str, namespace: str, start: float, *, fresh_timeout_s: float = 20.0
) -> list[UsageEntry]:
    """The usage table of the Model from its first request to now, after Prometheus has
    scraped the model server once more (so the last requests are in it)."""
    from loopline.monitoring.prometheus_http import PrometheusHttp
    from loopline.monitoring.usage import Scope, collect

    asked = time.time()
    job = JOBS["Metrics"]
    with PrometheusHttp(url) as prometheus:
        deadline = time.monotonic() + fresh_timeout_s
        while True:
            now = time.time()
            vector = prometheus.query(f'timestamp(up{{job="{job}"}})', now)
            scraped = max((float(s["value"][1]) for s in vector), default=0.0)
            if scraped > asked or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        rows = collect(prometheus.query, Scope(name=model, namespace=namespace), start, now)
    return entries(rows)
