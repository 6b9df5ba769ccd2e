"""Instant queries against a Prometheus server's HTTP API (`/api/v1/query`).

The one place that talks to Prometheus for `loopline usage`; what to ask and how to read the
answers is `loopline.monitoring.usage`, which takes `PrometheusHttp.query` as its query
function so it can be tested on canned answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

URL_ENV = "LOOPLINE_PROMETHEUS_URL"


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query; the message says which and why."""


class PrometheusHttp:
    """A Prometheus server at `url` (e.g. http://prometheus.monitoring.svc:9090)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(
                f"Prometheus URL {url!r}: must start with http:// or https:// "
                f"(--prometheus-url or {URL_ENV})"
            )
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s)

    def __enter__(self) -> PrometheusHttp:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.close()

    def query(self, expr: str, at: float) -> Sequence[Mapping[str, Any]]:
        """The instant vector `expr` evaluates to at unix time `at`."""
        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self._client.get(endpoint, params={"query": expr, "time": f"{at:.3f}"})
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: {exc} (set --prometheus-url or {URL_ENV})"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"{endpoint} answered {response.status_code} with a body that is not JSON: is "
                f"{self.url} a Prometheus server?"
            ) from None
        if body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus refused the query {expr!r}: {body.get('errorType', '')} "
                f"{body.get('error', body)}"
            )
        data = body["data"]
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"the query {expr!r} gave a {data.get('resultType')}, not a vector"
            )
        return list(data["result"])
