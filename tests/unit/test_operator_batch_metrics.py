"""The operator's /metrics: each Model's status.batch.usage as loopline_usage_* series with
source="batch", scraped over real HTTP on loopback from the operator's object cache; a new
operator (a new registry over the same statuses) exports the same values."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopline.operators.cache import ObjectCache
from loopline.operators.handlers import serve_metrics
from loopline.operators.settings import OperatorSettings


def _model(name: str, usage: list[dict[str, Any]], version: str = "7") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "plant", "resourceVersion": version},
        "status": {"batch": {"usage": usage}},
    }


USAGE = [
    {"version": "3", "outcome": "ok", "runs": 2, "rows": 1500, "fallbackRows": 12},
    {"version": "3", "outcome": "server_error", "runs": 1, "rows": 0, "fallbackRows": 0},
    {"version": "4", "outcome": "ok", "runs": 1, "rows": 60, "fallbackRows": 0},
]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Operator:
    """What serve_metrics reads of the operator: its object cache."""

    def __init__(self) -> None:
        self.cache = ObjectCache()


@pytest.fixture
def served() -> Iterator[tuple[_Operator, str]]:
    operator = _Operator()
    port = _port()
    settings = OperatorSettings(metrics_port=port, metrics_host="127.0.0.1")
    server = serve_metrics(settings, operator)
    try:
        yield operator, f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    base = {"model": "drill-ae", "namespace": "plant", "caller": "schedule", "source": "batch"}
    return name, tuple(sorted({**base, **labels}.items()))


def test_status_totals_are_the_usage_series(served: tuple[_Operator, str]) -> None:
    operator, url = served
    assert _samples(url) == {}  # no Model yet: no series
    operator.cache.observe("models", _model("drill-ae", USAGE))
    operator.cache.observe("pipelines", _model("training", USAGE))  # not a Model
    got = _samples(url)
    assert got == {
        _key("loopline_usage_requests_total", version="3", outcome="ok"): 2,
        _key("loopline_usage_requests_total", version="3", outcome="server_error"): 1,
        _key("loopline_usage_requests_total", version="4", outcome="ok"): 1,
        _key("loopline_usage_rows_total", version="3"): 1500,
        _key("loopline_usage_rows_total", version="4"): 60,
        _key("loopline_usage_fallback_rows_total", version="3"): 12,
        _key("loopline_usage_fallback_rows_total", version="4"): 0,
    }


def test_a_new_status_write_moves_the_counters_and_a_restart_repeats_nothing(
    served: tuple[_Operator, str],
) -> None:
    operator, url = served
    operator.cache.observe("models", _model("drill-ae", USAGE, version="7"))
    before = _samples(url)
    more = [dict(USAGE[0], runs=3, rows=1600), *USAGE[1:]]
    operator.cache.update_if_held("models", _model("drill-ae", more, version="8"))
    after = _samples(url)
    assert after[_key("loopline_usage_requests_total", version="3", outcome="ok")] == 3
    assert after[_key("loopline_usage_rows_total", version="3")] == 1600
    assert sum(after.values()) - sum(before.values()) == 1 + 100
    # A restarted operator: a new cache fed the same statuses by its watch.
    restarted = _Operator()
    restarted.cache.observe("models", _model("drill-ae", more, version="8"))
    port = _port()
    server = serve_metrics(
        OperatorSettings(metrics_port=port, metrics_host="127.0.0.1"),
        restarted,
    )
    try:
        assert _samples(f"http://127.0.0.1:{port}/metrics") == after
    finally:
        server.shutdown()
        server.server_close()


def test_an_entry_edited_into_nonsense_is_skipped_not_a_failed_scrape(
    served: tuple[_Operator, str],
) -> None:
    operator, url = served
    broken = [{"version": "3", "outcome": "maybe", "runs": -1}, USAGE[2]]
    operator.cache.observe("models", _model("drill-ae", broken))
    got = _samples(url)
    assert got[_key("loopline_usage_requests_total", version="4", outcome="ok")] == 1
    assert not [k for k in got if ("version", "3") in k[1]]
