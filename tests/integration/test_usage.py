"""Model usage end to end: both model server hosts (lean and MLServer), over REST and gRPC,
count what named callers send; a real Prometheus scrapes them, a real drift monitor and the
operator's /metrics (scheduled batch runs, from the Model's status as the operator's cache
holds it); `loopline usage` and every query of the "Model usage" dashboard read it back.

The scene: the servers still load version 1 as their champion with version 2 as a canary,
while the drift monitor already holds version 2 as the reference, as right after a
promotion, before the servers reload. So version 1 is called after its retirement, and the
retirement panel and `loopline usage` must say so for it and only for it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

from loopline import auth
from loopline.cli.main import cli
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import IS_FAULT, SENSORS
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.server import MonitorServer, build_monitor
from loopline.monitoring.settings import MonitorSettings
from loopline.operators.cache import ObjectCache
from loopline.operators.handlers import serve_metrics
from loopline.operators.settings import OperatorSettings
from loopline.ports import free_port
from loopline.serving.local import LocalModelSpec, LocalServingManager, ServerStatus
from tests.fixtures.monitoring import PrometheusHandle
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-ae"
HOSTS = ("lean", "mlserver")
DASHBOARD = (
    Path(__file__).resolve().parents[2] / "monitoring" / "dashboards" / "loopline-usage.json"
)
VARIABLES = {"$__rate_interval": "15s", "$__range": "10m", "$model": ".+", "$caller": ".+"}
FEED_RATE = SENSORS.index("feed_rate")
# Requests spread over several 1 s scrapes: `increase()` (the dashboard's) counts a series
# from its first scrape on, so a burst that ends before that scrape would leave it 0.
PACE_S = 0.1

Key = tuple[str, str]  # (caller, version)


class Tally:
    """What the test sent and what answered, per caller and version."""

    def __init__(self) -> None:
        self.ok: Counter[Key] = Counter()
        self.rows: Counter[Key] = Counter()
        self.fallback: Counter[Key] = Counter()
        self.errors: Counter[str] = Counter()

    def answered(self, caller: str, version: str, rows: int, fallback: int) -> None:
        self.ok[caller, version] += 1
        self.rows[caller, version] += rows
        self.fallback[caller, version] += fallback


@pytest.fixture
def monitor(tmp_path: Path, registered_model: RegisteredModel) -> Iterator[MonitorServer]:
    """A drift monitor whose reference (the champion, as the monitor sees it) is version 2."""
    history, _ = generate(GeneratorConfig(machines=4, days=2, interval_seconds=900, seed=5))
    reference = history[history[IS_FAULT] == 0][list(SENSORS)]
    settings = MonitorSettings(
        model=NAME,
        namespace="plant",
        requester="log",
        state_dir=tmp_path / "monitor-state",
        reference_poll_seconds=0,
    )
    built = build_monitor(
        settings,
        reference_source=FrameReferenceSource(
            reference, version=registered_model.challenger_version
        ),
        requester=LogRetrainRequester(),
    )
    token = auth.ensure_token_file(tmp_path / "model.token")
    with MonitorServer(built, token=token) as server:
        yield server


class OperatorMetrics:
    """The operator's /metrics as `loopline operator run` serves it (`serve_metrics` over the
    operator's object cache), fed the Model's status as the watch would deliver it; `restart`
    is a new operator whose cache the watch fills with the same status."""

    def __init__(self) -> None:
        self.port = free_port()
        self.cache = ObjectCache()
        self.server = self._serve()

    def _serve(self) -> Any:
        settings = OperatorSettings(metrics_port=self.port, metrics_host="127.0.0.1")
        return serve_metrics(settings, self)

    def status(self, version: str, usage: list[dict[str, Any]], revision: int) -> None:
        self.cache.observe(
            "models",
            {
                "metadata": {"name": NAME, "namespace": "plant", "resourceVersion": str(revision)},
                "status": {"batch": {"usage": usage}},
            },
        )

    def restart(self) -> None:
        held = self.cache.held("models")
        self.stop()
        self.cache = ObjectCache()
        for body in held:
            self.cache.observe("models", body)
        self.server = self._serve()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def operator_metrics() -> Iterator[OperatorMetrics]:
    metrics = OperatorMetrics()
    try:
        yield metrics
    finally:
        metrics.stop()


@pytest.fixture
def servers(tmp_path: Path, registered_model: RegisteredModel) -> Iterator[dict[str, ServerStatus]]:
    """Version 1 as champion and version 2 as a 50 % canary, on both hosts at once."""
    managers = {host: LocalServingManager(tmp_path / host, ready_timeout_s=180) for host in HOSTS}
    try:
        yield {
            host: manager.start(
                LocalModelSpec(
                    name=NAME,
                    model_uri=registered_model.champion_uri,
                    canary_model_uri=registered_model.challenger_uri,
                    canary_weight=0.5,
                    tracking_uri=registered_model.tracking_uri,
                    server=host,
                    token_file=str(tmp_path / "model.token"),
                )
            )
            for host, manager in managers.items()
        }
    finally:
        for manager in managers.values():
            manager.close()


def rest_body(x: np.ndarray) -> dict[str, Any]:
    data = [None if v != v else float(v) for v in x.reshape(-1)]
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": list(x.shape), "data": data}]
    }


def grpc_request(x: np.ndarray) -> Any:
    request = pb.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request


def drive(status: ServerStatus, tally: Tally) -> None:
    """REST as `mes` (some rows falling back, some requests refused), gRPC as `historian`,
    REST without a caller, and one caller name that needs sanitizing."""
    url = status.endpoints.infer_url(NAME)
    with httpx.Client(timeout=30) as client:
        for i in range(12):
            x = sensor_rows(3, seed=i)
            fallback = 1 if i % 4 == 0 else 0
            if fallback:
                x[0, FEED_RATE] = np.nan
            answer = client.post(url, json=rest_body(x), headers={"Loopline-Caller": "mes"})
            assert answer.status_code == 200, answer.text
            tally.answered("mes", answer.json()["model_version"], 3, fallback)
            time.sleep(PACE_S)
        for _ in range(3):
            bad = client.post(url, json={"inputs": []}, headers={"Loopline-Caller": "mes"})
            assert bad.status_code == 400, bad.text
            tally.errors["mes"] += 1
        for i in range(5):
            answer = client.post(url, json=rest_body(sensor_rows(1, seed=50 + i)))
            assert answer.status_code == 200, answer.text
            tally.answered("unknown", answer.json()["model_version"], 1, 0)
        answer = client.post(
            url, json=rest_body(sensor_rows(2, seed=60)), headers={"Loopline-Caller": "qa {x}"}
        )
        assert answer.status_code == 200, answer.text
        tally.answered("qa__x_", answer.json()["model_version"], 2, 0)
    metadata = (("loopline-caller", "historian"),)
    with grpc.insecure_channel(status.endpoints.grpc) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for i in range(8):
            reply = stub.ModelInfer(
                grpc_request(sensor_rows(2, seed=70 + i)), metadata=metadata, timeout=30
            )
            tally.answered("historian", reply.model_version, 2, 0)
            time.sleep(PACE_S)
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(pb.ModelInferRequest(model_name=NAME), metadata=metadata, timeout=30)
        tally.errors["historian"] += 1


def to_promql(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == DASHBOARD.stem
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    out = [(p["title"], to_promql(t["expr"])) for p in doc["panels"] for t in p["targets"]]
    for var in doc["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", var["query"]["query"])
            assert metric, var
            out.append((f"variable {var['name']}", metric.group(1)))
    return out


def test_usage_counts_match_what_each_caller_sent(
    servers: dict[str, ServerStatus],
    monitor: MonitorServer,
    operator_metrics: OperatorMetrics,
    registered_model: RegisteredModel,
    prometheus_factory: Any,
) -> None:
    champion, canary = registered_model.champion_version, registered_model.challenger_version
    # Two scheduled runs of the canary version ended before the range.
    before = [{"version": canary, "outcome": "ok", "runs": 2, "rows": 2000, "fallbackRows": 20}]
    operator_metrics.status(canary, before, revision=1)
    scrape = {
        "loopline-monitor": [f"{monitor.host}:{monitor.port}"],
        "loopline-operator": [f"127.0.0.1:{operator_metrics.port}"],
    }
    paths = {}
    for host, status in servers.items():
        metrics = urlparse(status.endpoints.metrics)
        scrape[f"serving-{host}"] = [metrics.netloc]
        paths[f"serving-{host}"] = metrics.path or "/metrics"
    prom: PrometheusHandle = prometheus_factory(scrape, metrics_path=paths)
    prom.wait_until(
        lambda: len(prom.targets_up()) == 4 and all(prom.targets_up().values()),
        what="every target up",
    )
    batch = 'loopline_usage_requests_total{source="batch"}'
    prom.wait_until(lambda: _total(prom, batch) == 2, what="the batch runs before the range")
    time.sleep(6)  # the range below starts after that scrape
    since = time.time() - 5
    # In the range: one scheduled run succeeds (720 rows, 10 by the fallback) and one fails,
    # each counted in the status write that ends it; then the operator restarts.
    during = [
        {"version": canary, "outcome": "ok", "runs": 3, "rows": 2720, "fallbackRows": 30},
        {"version": canary, "outcome": "server_error", "runs": 1},
    ]
    operator_metrics.status(canary, during, revision=2)
    prom.wait_until(lambda: _total(prom, batch) == 4, what="the runs of the range scraped")
    operator_metrics.restart()
    restarted_at = time.time()
    tally = Tally()
    for status in servers.values():
        drive(status, tally)
    sent = sum(tally.ok.values()) + sum(tally.errors.values())
    prom.wait_until(
        lambda: [
            s
            for s in prom.query('sum(loopline_usage_requests_total{source!="batch"})')
            if float(s["value"][1]) == sent
        ],
        what=f"all {sent} requests scraped",
    )
    assert {version for _, version in tally.ok} == {champion, canary}  # both versions answered
    # The restarted operator exports the same totals: Prometheus sees no reset, no repeat.
    operator_up = 'up{job="loopline-operator"}'
    prom.wait_until(
        lambda: (
            _total(prom, f"timestamp({operator_up})") > restarted_at
            and _total(prom, operator_up) == 1
        ),
        what="a scrape of the restarted operator",
    )
    assert _total(prom, batch) == 4

    result = CliRunner().invoke(
        cli,
        ["usage", "--since", f"{int(time.time() - since) + 1}s", "--model", f"plant/{NAME}",
         "-o", "json"],
        env={"LOOPLINE_PROMETHEUS_URL": prom.url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    (scheduled,) = [r for r in table if r["source"] == "batch"]
    assert (scheduled["caller"], scheduled["version"]) == ("schedule", canary)
    assert (scheduled["requests"], scheduled["server_errors"]) == (2, 1)  # once each
    assert (scheduled["rows"], scheduled["fallback_rows"]) == (720, 10)
    table = [r for r in table if r["source"] == "online"]
    answered = [r for r in table if r["requests"] > r["client_errors"]]
    by_key = {(r["caller"], r["version"]): r for r in answered}
    assert {k: r["requests"] - r["client_errors"] for k, r in by_key.items()} == dict(tally.ok)
    assert {k: r["rows"] for k, r in by_key.items()} == dict(tally.rows)
    assert {k: r["fallback_rows"] for k, r in by_key.items()} == {
        k: float(tally.fallback[k]) for k in tally.ok
    }
    for r in answered:
        assert r["p50_seconds"] is not None, r
        assert 0 < r["p50_seconds"] < 1, r
    errors: Counter[str] = Counter()
    for r in table:
        errors[r["caller"]] += int(r["client_errors"])
        assert r["server_errors"] == 0
        assert r["retired"] is (r["version"] == champion), r
    assert errors == tally.errors

    queries = dashboard_queries()
    empty = [f"{where}: {expr}" for where, expr in queries if not prom.query(expr)]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    retired_panel = next(expr for where, expr in queries if "retirement" in where)
    called = {(s["metric"]["version"], s["metric"]["caller"]) for s in prom.query(retired_panel)}
    # Only the retired version, and only callers that called it (`increase()` may miss a
    # caller whose few requests all came before its series' first scrape).
    assert {version for version, _ in called} == {champion}
    assert {caller for _, caller in called} <= {c for c, v in tally.ok if v == champion} | set(
        tally.errors
    )


def _total(prom: PrometheusHandle, expr: str) -> float:
    return sum(float(s["value"][1]) for s in prom.query(expr))
