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
from loopline.monitoring.usage import (
    QUANTILES,
    Scope,
    as_text,
    collect,
    current_query,
    latency_query,
)

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
LATENCY = {
    0.5: {("3", "mes"): 0.002, ("2", "historian"): 0.001},
    0.95: {("3", "mes"): 0.004, ("2", "historian"): 0.003},
    0.99: {("3", "mes"): 0.009, ("2", "historian"): float("nan")},
}
for q in QUANTILES:
    CANNED[(latency_query(q, SCOPE, int(END - START)), END)] = [
        sample(v, model="drill-ae", version=version, caller=caller)
        for (version, caller), v in LATENCY[q].items()
    ]


def canned(expr: str, at: float) -> Sequence[Mapping[str, Any]]:
    assert (expr, at) in CANNED, f"unexpected query at {at}: {expr}"
    return CANNED[(expr, at)]


def test_counts_are_exact_per_model_version_and_caller() -> None:
    rows = collect(canned, SCOPE, START, END)
    assert [(r.version, r.caller) for r in rows] == [("3", "mes"), ("2", "historian")]
    mes, historian = rows
    assert (mes.requests, mes.client_errors, mes.server_errors) == (22, 2, 0)
    assert mes.rows == 350
    assert mes.fallback_rows == 35
    assert mes.fallback_share == pytest.approx(0.1)
    assert mes.error_share == pytest.approx(2 / 22)
    assert (mes.p50_seconds, mes.p95_seconds, mes.p99_seconds) == (0.002, 0.004, 0.009)
    assert mes.retired is False
    assert (historian.requests, historian.rows, historian.fallback_rows) == (7, 70, 0)
    assert historian.p99_seconds is None  # NaN: no bucket grew
    assert historian.retired is True


def test_without_a_known_champion_retirement_is_not_judged() -> None:
    def no_current(expr: str, at: float) -> Sequence[Mapping[str, Any]]:
        return [] if expr == current_query(SCOPE) else canned(expr, at)

    assert {r.retired for r in collect(no_current, SCOPE, START, END)} == {None}


def test_text_table_has_a_line_per_version_and_caller() -> None:
    text = as_text(collect(canned, SCOPE, START, END)).splitlines()
    assert text[0].split()[:4] == ["MODEL", "VERSION", "CALLER", "REQUESTS"]
    assert text[1].split() == [
        "drill-ae", "3", "mes", "22", "2", "9.1%", "350", "10.0%", "2.00", "4.00", "9.00", "no",
    ]  # fmt: skip
    assert text[2].split()[-1] == "yes"


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
