"""The usage table from canned Prometheus answers: exact counts from counter values at both
ends of the range (servers that restart or appear inside it), shares, percentiles, retired
versions; and `loopline usage` printing it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.monitoring.prometheus_http import PrometheusHttp
from loopline.monitoring.usage import Scope, as_text, collect, current_query, quantile

START, END = 1_000.0, 4_600.0


def sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [END, str(value)]}


def usage(metric: str, value: float, instance: str, version: str, caller: str, **more: str) -> Any:
    return sample(
        value,
        __name__=metric,
        model="drill-ae",
        version=version,
        caller=caller,
        instance=instance,
        **more,
    )


REQ = "loopline_usage_requests_total"
ROWS = "loopline_usage_rows_total"
FB = "loopline_usage_fallback_rows_total"
SCOPE = Scope.parse("plant/drill-ae")
SEL = '{model="drill-ae",namespace=~"plant|"}'

CANNED: dict[tuple[str, float], list[dict[str, Any]]] = {
    (REQ + SEL, START): [
        usage(REQ, 10, "a", "3", "mes", outcome="ok"),
        usage(REQ, 9, "a", "2", "historian", outcome="ok"),
    ],
    (REQ + SEL, END): [
        usage(REQ, 25, "a", "3", "mes", outcome="ok"),
        usage(REQ, 5, "b", "3", "mes", outcome="ok"),  # a server that started in the range
        usage(REQ, 2, "a", "3", "mes", outcome="client_error"),
        usage(REQ, 7, "a", "2", "historian", outcome="ok"),  # restarted: counter went down
        usage(REQ, 0, "a", "2", "mes", outcome="ok"),  # not called: no row
        usage(REQ, 1, "a", "3", "historian", outcome="client_error"),  # refused only
    ],
    (ROWS + SEL, START): [
        usage(ROWS, 100, "a", "3", "mes"),
        usage(ROWS, 90, "a", "2", "historian"),
    ],
    (ROWS + SEL, END): [
        usage(ROWS, 400, "a", "3", "mes"),
        usage(ROWS, 50, "b", "3", "mes"),
        usage(ROWS, 70, "a", "2", "historian"),
    ],
    (FB + SEL, START): [usage(FB, 5, "a", "3", "mes")],
    (FB + SEL, END): [usage(FB, 40, "a", "3", "mes"), usage(FB, 0, "a", "2", "historian")],
    (current_query(SCOPE), END): [sample(1, model="drill-ae", version="3")],
}
BUCKETS = "loopline_usage_latency_seconds_bucket"
INF = "+Inf"


def buckets(instance: str, version: str, caller: str, **counts: float) -> list[Any]:
    """Cumulative bucket samples, `le` spelt as Prometheus does (`0.002`, `+Inf`)."""
    return [
        usage(BUCKETS, v, instance, version, caller, le=le.replace("_", ".").replace("inf", INF))
        for le, v in counts.items()
    ]


MES_A = {"0_001": 0, "0_002": 5, "0_005": 8, "0_01": 10, "inf": 10}
CANNED[(BUCKETS + SEL, START)] = [
    *buckets("a", "3", "mes", **MES_A),
    *buckets("a", "2", "historian", **{"0_001": 9, "inf": 9}),
]
CANNED[(BUCKETS + SEL, END)] = [
    *buckets("a", "3", "mes", **{k: 2 * v for k, v in MES_A.items()}),
    *buckets("b", "3", "mes", **MES_A),
    *buckets("a", "2", "historian", **{"0_001": 7, "inf": 7}),
]


def canned(expr: str, at: float) -> Sequence[Mapping[str, Any]]:
    assert (expr, at) in CANNED, f"unexpected query at {at}: {expr}"
    return CANNED[(expr, at)]


def test_counts_are_exact_per_model_version_and_caller() -> None:
    rows = collect(canned, SCOPE, START, END)
    assert [(r.version, r.caller) for r in rows] == [
        ("3", "mes"),
        ("2", "historian"),
        ("3", "historian"),
    ]
    mes, historian, refused = rows
    assert (mes.requests, mes.client_errors, mes.server_errors) == (22, 2, 0)
    assert mes.rows == 350
    assert mes.fallback_rows == 35
    assert mes.fallback_share == pytest.approx(0.1)
    assert mes.error_share == pytest.approx(2 / 22)
    # 20 observations: 10 up to 2 ms, 16 up to 5 ms, 20 up to 10 ms
    assert mes.p50_seconds == pytest.approx(0.002)
    assert mes.p95_seconds == pytest.approx(0.005 + 0.005 * 3 / 4)
    assert mes.p99_seconds == pytest.approx(0.005 + 0.005 * 3.8 / 4)
    assert mes.retired is False
    assert (historian.requests, historian.rows, historian.fallback_rows) == (7, 70, 0)
    assert historian.p50_seconds == pytest.approx(0.0005)  # restarted: its 7 at the end count
    assert historian.retired is True
    assert (refused.requests, refused.client_errors, refused.rows) == (1, 1, 0)
    assert refused.p50_seconds is None  # nothing answered, nothing observed


def test_without_a_known_champion_retirement_is_not_judged() -> None:
    def no_current(expr: str, at: float) -> Sequence[Mapping[str, Any]]:
        return [] if expr == current_query(SCOPE) else canned(expr, at)

    assert {r.retired for r in collect(no_current, SCOPE, START, END)} == {None}


def test_text_table_has_a_line_per_version_and_caller() -> None:
    text = as_text(collect(canned, SCOPE, START, END)).splitlines()
    assert text[0].split()[:4] == ["MODEL", "VERSION", "CALLER", "REQUESTS"]
    assert text[1].split() == [
        "drill-ae", "3", "mes", "22", "2", "9.1%", "350", "10.0%", "2.00", "8.75", "9.75", "no",
    ]  # fmt: skip
    assert text[2].split()[-1] == "yes"
    assert text[3].split()[-4:] == ["-", "-", "-", "no"]


def test_quantile_reads_buckets_as_histogram_quantile_does() -> None:
    inf = float("inf")
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0, inf: 0}) is None
    assert quantile(0.5, {0.1: 4, inf: 4}) == pytest.approx(0.05)
    # past the last finite bound: that bound, as Prometheus answers
    assert quantile(0.99, {0.1: 1, 0.2: 2, inf: 10}) == pytest.approx(0.2)
    assert quantile(0.5, {0.1: 4, 0.2: 4, 0.4: 8, inf: 8}) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("plant/", "NAMESPACE/NAME"),
        ("/drill-ae", "NAMESPACE/NAME"),
        ("a/b/c", "NAMESPACE/NAME"),
        ('drill"ae', "not a Model name"),
        ("Plant/drill-ae", "not a Kubernetes namespace"),
    ],
)
def test_bad_model_reference_names_the_option(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scope.parse(ref)


def test_selector_without_a_namespace_matches_every_namespace() -> None:
    assert Scope.parse("drill-ae").selector() == '{model="drill-ae"}'
    assert Scope().selector('role="canary"') == '{role="canary"}'


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr(PrometheusHttp, "query", lambda self, expr, at: canned(expr, at))
    return CliRunner().invoke(
        cli,
        ["usage", "--model", "plant/drill-ae", *args],
        env={"LOOPLINE_PROMETHEUS_URL": "http://prometheus.test:9090"},
    )


def test_cli_prints_the_table_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(
        monkeypatch, "--since", "1970-01-01T00:16:40Z", "--until", "1970-01-01T01:16:40Z", "-o",
        "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = json.loads(result.output)
    assert [(d["version"], d["caller"], d["requests"]) for d in docs] == [
        ("3", "mes", 22),
        ("2", "historian", 7),
        ("3", "historian", 1),
    ]
    assert docs[1]["retired"] is True
    assert docs[0]["fallback_share"] == pytest.approx(0.1)


def test_cli_refuses_a_bad_range_and_a_bad_url(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(monkeypatch, "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since" in result.output
    assert "neither a duration" in result.output
    result = CliRunner().invoke(cli, ["usage", "--prometheus-url", "prometheus:9090"])
    assert result.exit_code == 1
    assert "must start with http://" in result.output


def test_the_operators_batch_series_are_rows_of_their_own() -> None:
    """Scheduled batch runs (the operator's series, source="batch", caller="schedule") are a
    row beside the servers' rows, never summed into an online caller's; a run that ended
    between the ends of the range counts once (1 -> 2 runs)."""
    batch = {"source": "batch", "namespace": "plant"}

    def with_batch(expr: str, at: float) -> Sequence[Mapping[str, Any]]:
        extra: dict[tuple[str, float], list[Any]] = {
            (REQ + SEL, START): [usage(REQ, 1, "op", "3", "schedule", outcome="ok", **batch)],
            (REQ + SEL, END): [
                usage(REQ, 2, "op", "3", "schedule", outcome="ok", **batch),
                usage(REQ, 1, "op", "3", "schedule", outcome="server_error", **batch),
            ],
            (ROWS + SEL, START): [usage(ROWS, 1000, "op", "3", "schedule", **batch)],
            (ROWS + SEL, END): [usage(ROWS, 2440, "op", "3", "schedule", **batch)],
            (FB + SEL, END): [usage(FB, 144, "op", "3", "schedule", **batch)],
        }
        return [*canned(expr, at), *extra.get((expr, at), [])]

    rows = collect(with_batch, SCOPE, START, END)
    (scheduled,) = [r for r in rows if r.source == "batch"]
    assert (scheduled.caller, scheduled.version) == ("schedule", "3")
    assert (scheduled.requests, scheduled.server_errors, scheduled.rows) == (2, 1, 1440)
    assert scheduled.fallback_rows == 144
    assert scheduled.p50_seconds is None
    online = [r for r in rows if r.source == "online"]
    assert [(r.version, r.caller, r.requests) for r in online] == [
        ("3", "mes", 22),
        ("2", "historian", 7),
        ("3", "historian", 1),
    ]
    assert "schedule (batch)" in as_text(rows)
