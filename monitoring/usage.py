"""Model usage over a time range: who called which model version, how often, with what result.

The model servers count every inference request in the `loopline_usage_*` series (model,
version, caller, outcome; `loopline.serving.callers` bounds the callers). This module turns
Prometheus answers about them into one table, the one `loopline usage` prints and the "Model
usage" dashboard shows.

Counts are exact, not `increase()`'s extrapolation: each series' value at the end of the range
minus its value at the start (a series born inside the range counts whole; one whose counter
went down, a restarted server, counts its value at the end). They are summed per model,
version and caller only after that, so servers that come and go never cancel each other out.
Latency percentiles come from the latency histogram's buckets grown the same way, read as
Prometheus' `histogram_quantile` reads them (linear inside a bucket); `increase()` would
miss the requests of a series before its first scrape.

A version is *retired* when it is called but is neither the Model's champion (the version
its drift monitor holds as the reference, `loopline_monitor_reference_info`) nor a canary a
server loads (`loopline_model_version_info{role="canary"}`). With no champion known for a
model (no monitor scraped), retirement is not judged.

Everything here is pure but `collect`, which asks a query function for the vectors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

REQUESTS = "loopline_usage_requests_total"
ROWS = "loopline_usage_rows_total"
FALLBACK_ROWS = "loopline_usage_fallback_rows_total"
LATENCY_BUCKETS = "loopline_usage_latency_seconds_bucket"
KEY = ("model", "version", "caller", "source")  # source: absent on the servers' series
ONLINE = "online"

Vector = Sequence[Mapping[str, Any]]  # the `result` of a Prometheus instant query
Query = Callable[[str, float], Vector]  # (PromQL, unix time) -> vector

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Scope:
    """Which series to read: one Model (`name`, optionally in `namespace`) or all."""

    name: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(cls, ref: str | None) -> Scope:
        """`NAME` or `NAMESPACE/NAME`; a clear error naming the option otherwise."""
        if not ref:
            return cls()
        namespace, sep, name = ref.rpartition("/")
        if not name or (sep and not namespace) or "/" in namespace:
            raise ValueError(f"--model {ref!r}: write the Model as NAMESPACE/NAME or NAME")
        if not _NAME.match(name):
            raise ValueError(
                f"--model {ref!r}: the name {name!r} is not a Model name (lowercase letters, "
                "digits, '-' and '.')"
            )
        if namespace and not _NAMESPACE.match(namespace):
            raise ValueError(
                f"--model {ref!r}: the namespace {namespace!r} is not a Kubernetes namespace "
                "(lowercase letters, digits and '-')"
            )
        return cls(name=name, namespace=namespace or None)

    def selector(self, extra: str = "") -> str:
        """A PromQL label matcher. Series scraped without a `namespace` label (local mode,
        static targets) match any namespace."""
        matchers = [extra] if extra else []
        if self.name:
            matchers.append(f'model="{self.name}"')
        if self.namespace:
            matchers.append(f'namespace=~"{self.namespace}|"')
        return "{" + ",".join(matchers) + "}"


@dataclass(frozen=True)
class UsageRow:
    """One model version's use by one caller over the range."""

    model: str
    version: str
    caller: str
    requests: float
    client_errors: float
    server_errors: float
    rows: float
    fallback_rows: float
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    retired: bool | None  # None: no champion known for the model, not judged
    source: str = ONLINE  # online: model servers' series; batch: scheduled or MLflow runs

    @property
    def error_share(self) -> float:
        return (self.client_errors + self.server_errors) / self.requests if self.requests else 0.0

    @property
    def fallback_share(self) -> float:
        return self.fallback_rows / self.rows if self.rows else 0.0


def _value(sample: Mapping[str, Any]) -> float:
    return float(sample["value"][1])


def _identity(sample: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(sample["metric"].items()))


def deltas(start: Vector, end: Vector) -> dict[tuple[tuple[str, str], ...], float]:
    """Each series' growth from `start` to `end` (its whole value if it went down or was
    not there at the start)."""
    before = {_identity(s): _value(s) for s in start}
    out = {}
    for sample in end:
        key = _identity(sample)
        now = _value(sample)
        was = before.get(key, 0.0)
        out[key] = now - was if now >= was else now
    return out


def _by(
    growth: Mapping[tuple[tuple[str, str], ...], float], labels: Sequence[str]
) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for identity, value in growth.items():
        metric = dict(identity)
        key = tuple(metric.get(name, "") for name in labels)
        out[key] = out.get(key, 0.0) + value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The `q` quantile of cumulative bucket counts by upper bound (`le`), interpolated
    linearly inside the bucket as `histogram_quantile` does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != float("inf") or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for i, bound in enumerate(bounds):
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return bounds[i - 1] if i else None
            if i == 0 and bound <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return None


def table(
    requests: tuple[Vector, Vector],
    rows: tuple[Vector, Vector],
    fallback_rows: tuple[Vector, Vector],
    latency_buckets: tuple[Vector, Vector],
    current: Vector,
) -> list[UsageRow]:
    """The usage table from (start, end) vectors of the counters and of the latency
    buckets, and the current (champion or canary) versions; sorted by model, most
    requests first."""
    by_outcome = _by(deltas(*requests), (*KEY, "outcome"))
    row_counts = _by(deltas(*rows), KEY)
    fallback_counts = _by(deltas(*fallback_rows), KEY)
    histograms: dict[tuple[str, ...], dict[float, float]] = {}
    for labels, count in _by(deltas(*latency_buckets), (*KEY, "le")).items():
        histograms.setdefault(labels[:-1], {})[float(labels[-1])] = count
    live: dict[str, set[str]] = {}
    for sample in current:
        live.setdefault(sample["metric"].get("model", ""), set()).add(
            sample["metric"].get("version", "")
        )
    totals: dict[tuple[str, ...], dict[str, float]] = {}
    for labels, count in by_outcome.items():
        totals.setdefault(labels[:-1], {})[labels[-1]] = count
    out = []
    for key, outcomes in totals.items():
        requests_n = sum(outcomes.values())
        if requests_n <= 0:
            continue  # not called in the range
        model, version, caller, source = key
        versions = live.get(model)
        histogram = histograms.get(key, {})
        out.append(
            UsageRow(
                model=model,
                version=version,
                caller=caller,
                requests=requests_n,
                client_errors=outcomes.get("client_error", 0.0),
                server_errors=outcomes.get("server_error", 0.0),
                rows=row_counts.get(key, 0.0),
                fallback_rows=fallback_counts.get(key, 0.0),
                p50_seconds=quantile(0.5, histogram),
                p95_seconds=quantile(0.95, histogram),
                p99_seconds=quantile(0.99, histogram),
                retired=None if not versions else version not in versions,
                source=source or ONLINE,
            )
        )
    return sorted(out, key=lambda r: (r.model, -r.requests, r.version, r.caller, r.source))


def current_query(scope: Scope) -> str:
    """The versions that are not retired: the champion (the drift monitor's reference) and
    any canary a server loads."""
    canary = scope.selector('role="canary"')
    return (
        f"max by (model, version) (loopline_monitor_reference_info{scope.selector()} == 1) or "
        f"max by (model, version) (loopline_model_version_info{canary} == 1)"
    )


def collect(query: Query, scope: Scope, start: float, end: float) -> list[UsageRow]:
    """The usage table of `scope` between the unix times `start` and `end`."""
    if end <= start:
        raise ValueError(f"the range is empty: --since must be before the end ({start} >= {end})")

    def pair(metric: str) -> tuple[Vector, Vector]:
        expr = metric + scope.selector()
        return query(expr, start), query(expr, end)

    return table(
        requests=pair(REQUESTS),
        rows=pair(ROWS),
        fallback_rows=pair(FALLBACK_ROWS),
        latency_buckets=pair(LATENCY_BUCKETS),
        current=query(current_query(scope), end),
    )


def as_json(rows: Iterable[UsageRow]) -> str:
    docs = []
    for row in rows:
        doc = asdict(row)
        doc["error_share"] = row.error_share
        doc["fallback_share"] = row.fallback_share
        docs.append(doc)
    return json.dumps(docs, indent=2)


HEADERS = (
    "MODEL",
    "VERSION",
    "CALLER",
    "REQUESTS",
    "ERRORS",
    "ERROR%",
    "ROWS",
    "FALLBACK%",
    "P50 ms",
    "P95 ms",
    "P99 ms",
    "RETIRED",
)


def as_text(rows: Sequence[UsageRow]) -> str:
    """An aligned table, one line per model version and caller."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.2f}"

    lines = [HEADERS]
    for r in rows:
        lines.append(
            (
                r.model,
                r.version,
                r.caller if r.source == ONLINE else f"{r.caller} ({r.source})",
                f"{r.requests:.0f}",
                f"{r.client_errors + r.server_errors:.0f}",
                f"{r.error_share:.1%}",
                f"{r.rows:.0f}",
                f"{r.fallback_share:.1%}",
                ms(r.p50_seconds),
                ms(r.p95_seconds),
                ms(r.p99_seconds),
                {True: "yes", False: "no", None: "?"}[r.retired],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
