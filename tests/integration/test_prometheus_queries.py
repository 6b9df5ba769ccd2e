"""Every PromQL expression of the dashboards and rules, evaluated by a real Prometheus that
scrapes a real model server (MLServer + Loopline runtime) and the real drift monitor it samples
to, while generated plant traffic with a recipe change flows through them.

The scenario is built so that each expression has data: drift and a retraining request, rows
with a missing non-core sensor (fallbacks), malformed requests (errors), and sample batches
larger than the monitor's queue (drops). Three alerts are not meant to fire here (slow
inference, monitor down, drift without retraining); for those, each operand of the condition
must have data, so a misspelt metric still fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import yaml

from loopline import auth
from loopline.data.generator import GeneratorConfig, generate, live_traffic
from loopline.data.schema import IS_FAULT, SENSORS, TIMESTAMP
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.server import MonitorServer, build_monitor
from loopline.monitoring.settings import MonitorSettings
from loopline.serving.local import LocalModelSpec, LocalServingManager
from loopline.wait import WaitTimeout, wait_for
from tests.fixtures.monitoring import PrometheusHandle
from tests.fixtures.serving import RegisteredModel, v2_tensor_request

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "monitoring" / "rules").glob("*.yaml"))
# The usage dashboard needs named callers and a retired version: tests/integration/test_usage.py.
DASHBOARDS = sorted(
    p for p in (ROOT / "monitoring" / "dashboards").glob("*.json") if p.stem != "loopline-usage"
)
NAME = "drill-ae"
NOT_FIRING_HERE = {
    "LooplineInferenceSlow",
    "LooplineMonitorDown",
    "LooplineDriftPersistsWithoutRetraining",
}
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$model": ".+"}
SERVING_INFO = "loopline_model_version_info"
SERVING_LAYERS = {"Serving version", "Canary started", "Canary promoted", "Canary rolled back"}
SERVING_STEP_S = 30  # the layers' step: Grafana evaluates them every 30 s


def to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr.replace("$labels", ""), f"unknown Grafana variable in {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: panel {panel['title']!r}", to_promql(target["expr"])))
        for ann in doc["annotations"]["list"]:
            # The serving-version layers have data only around a change: tested on their own.
            if "expr" in ann and SERVING_INFO not in ann["expr"]:
                out.append((f"{path.name}: annotation {ann['name']!r}", to_promql(ann["expr"])))
        for var in doc["templating"]["list"]:
            query = var.get("query")
            if isinstance(query, dict):
                metric = re.fullmatch(r"label_values\((\w+), *\w+\)", query["query"])
                assert metric, f"{path.name}: variable {var['name']} query {query['query']!r}"
                out.append((f"{path.name}: variable {var['name']!r}", metric.group(1)))
    return out


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def operands(expr: str) -> list[str]:
    """The sides of an alert condition without their thresholds: `a > 1 and on (m) b == 0`
    gives [a, b]."""
    parts = re.split(r"\band on \([^)]*\)", expr)
    return [re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[-+0-9.e]+\s*$", "", p.strip()) for p in parts]


def test_promtool_check_rules() -> None:
    assert RULE_FILES, "no rule files under monitoring/rules"
    out = subprocess.run(
        ["promtool", "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboards_are_grafana_json_with_unique_ids() -> None:
    assert {p.stem for p in DASHBOARDS} >= {
        "loopline-drift",
        "loopline-anomalies",
        "loopline-serving",
    }
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["uid"] == path.stem
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), path.name
        assert all(p["targets"] for p in doc["panels"]), path.name


@pytest.fixture
def fast_rules(tmp_path: Path) -> list[Path]:
    """The rule files with a 1 s group interval (30 s in production), so a test sees results."""
    out = []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
        target = tmp_path / "rules" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(target)
    return out


@pytest.fixture
def monitor_server(tmp_path: Path) -> Iterator[MonitorServer]:
    history, _ = generate(GeneratorConfig(machines=10, days=3, interval_seconds=600, seed=3))
    reference = history[history[IS_FAULT] == 0][list(SENSORS)]
    settings = MonitorSettings(
        model=NAME,
        namespace="plant",
        window_size=200,
        window_step=100,
        consecutive_windows=2,
        queue_rows=60,  # sample batches of 100 rows overflow it: drops have data
        requester="log",
        state_dir=tmp_path / "monitor-state",
        reference_poll_seconds=0,
    )
    monitor = build_monitor(
        settings,
        reference_source=FrameReferenceSource(reference, version="1"),
        requester=LogRetrainRequester(),
    )
    # The model server gets the same token file (test below): the Model's one token.
    token = auth.ensure_token_file(tmp_path / "model.token")
    with MonitorServer(monitor, token=token) as server:
        yield server


def drive_traffic(rest: str, monitor_url: str) -> None:
    """Steady traffic, then a +30 % recipe change; 1 in 3 requests lacks feed_rate (fallback),
    1 in 10 is malformed, every 4th is 100 rows (more than the monitor's queue), paced so that
    Prometheus scrapes the counters while they grow."""
    history, manifest = generate(GeneratorConfig(machines=10, days=3, interval_seconds=600, seed=3))
    del history
    live, _ = live_traffic(
        manifest,
        minutes=2 * 1440,
        recipe_change_at=manifest.end + timedelta(hours=12),
        recipe_shift=0.3,
        sensor_faults_per_day=0,  # a NaN core sensor is a 422 by design; not this test's topic
    )
    live = live.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    url = f"{rest}/v2/models/{NAME}/infer"
    with httpx.Client(timeout=30) as client:
        start, i = 0, 0
        while start < len(live):
            size = 100 if i % 4 == 3 else 40
            part = live.iloc[start : start + size].copy()
            start += size
            i += 1
            if i % 3 == 0:
                part["feed_rate"] = np.nan
            response = client.post(url, json=v2_tensor_request(part))
            assert response.status_code == 200, response.text
            if i % 10 == 0:
                bad = client.post(url, json={"inputs": []})
                assert 400 <= bad.status_code < 500
            # Spread the requests over several 1 s scrapes: a burst that ends before the
            # first scrape leaves rate() nothing to see, and the alerts would never fire.
            time.sleep(0.1)

        def raised_and_idle() -> bool:
            status = client.get(monitor_url + "/v1/status").json()
            return bool(status["requests"] >= 1 and status["idle"])

        wait_for(raised_and_idle, timeout=60, what="the monitor to raise a request and go idle")


def expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every dashboard panel, recording rule and alert operand that must
    return data once the traffic raised a retraining request."""
    for where, expr in dashboard_queries():
        yield where, expr
    for rule in rules():
        if "record" in rule:
            for expr in (rule["expr"], rule["record"]):
                yield f"record {rule['record']}", expr
        elif rule["alert"] in NOT_FIRING_HERE:
            for part in operands(rule["expr"]):
                yield f"alert {rule['alert']} operand", part
        else:
            yield f"alert {rule['alert']} (should fire here)", rule["expr"]


def test_every_dashboard_and_rule_query_returns_data(
    monitor_server: MonitorServer,
    registered_model: RegisteredModel,
    prometheus_factory: Any,
    fast_rules: list[Path],
    tmp_path: Path,
) -> None:
    with LocalServingManager(tmp_path / "serving", ready_timeout_s=180) as manager:
        status = manager.start(
            LocalModelSpec(
                name=NAME,
                model_uri=registered_model.champion_uri,
                tracking_uri=registered_model.tracking_uri,
                monitor_url=monitor_server.url,
                sample_rate=1.0,
                token_file=str(tmp_path / "model.token"),
            )
        )
        metrics = urlparse(status.endpoints.metrics)
        prom: PrometheusHandle = prometheus_factory(
            {
                "loopline-monitor": [f"{monitor_server.host}:{monitor_server.port}"],
                "loopline-serving": [metrics.netloc],
            },
            rule_files=fast_rules,
            metrics_path={"loopline-serving": metrics.path or "/metrics"},
        )
        prom.wait_until(
            lambda: len(prom.targets_up()) == 2 and all(prom.targets_up().values()),
            what="both targets up",
        )
        drive_traffic(status.endpoints.rest, monitor_server.url)
        # a few scrapes and rule evaluations after the request was raised
        prom.wait_until(
            lambda: prom.query("loopline_retraining_requests_total > 0"),
            what="the retraining request in Prometheus",
        )
        prom.wait_until(
            lambda: prom.query("loopline:fallback_rows:ratio_rate5m"), what="recording rules"
        )
        # Rules evaluate on their own schedule: poll until every expression has data (or fail
        # naming the ones that never got any).
        checked: list[str] = []

        def without_data() -> list[str]:
            empty: list[str] = []
            checked.clear()
            for where, expr in expressions():
                checked.append(expr)
                if not prom.query(expr):
                    empty.append(f"{where}: {expr}")
            return empty

        try:
            wait_for(lambda: not without_data(), timeout=60, what="data for every expression")
        except WaitTimeout:
            pytest.fail("expressions without data:\n" + "\n".join(without_data()))
        print(f"\n{len(checked)} PromQL expressions evaluated against a real Prometheus")

        alerts = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
        assert "LooplineDriftDetected" in alerts


def serving_layers() -> dict[str, str]:
    """name -> PromQL of the serving-version annotation layers, the same in every dashboard."""
    found: dict[str, dict[str, str]] = {}
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        found[path.name] = {
            ann["name"]: to_promql(ann["expr"])
            for ann in doc["annotations"]["list"]
            if SERVING_INFO in ann.get("expr", "")
        }
    first = next(iter(found.values()))
    assert set(first) == SERVING_LAYERS, first
    for name, layers in found.items():
        assert layers == first, f"{name}: serving-version layers differ from the others"
    return first


def test_every_dashboard_has_the_serving_version_layers() -> None:
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for ann in doc["annotations"]["list"]:
            if ann["name"] in SERVING_LAYERS:
                assert "{{version}}" in ann["titleFormat"], (path.name, ann["name"])
                assert ann["step"] == f"{SERVING_STEP_S}s", (path.name, ann["name"])
    assert serving_layers()


def annotation_times(
    prom: PrometheusHandle, expr: str, start: float, end: float
) -> dict[str, list[float]]:
    """version -> the times (1 s apart) at which the layer's query returns that version: where
    Grafana draws its annotation."""
    data = prom.api("query_range", query=expr, start=start, end=end, step="1s")
    out: dict[str, list[float]] = {}
    for series in data["result"]:
        out.setdefault(series["metric"]["version"], []).extend(
            float(t) for t, _ in series["values"]
        )
    return out


def test_serving_version_annotations_mark_each_change_when_it_happens(
    registered_model: RegisteredModel,
    prometheus_factory: Any,
    tmp_path: Path,
) -> None:
    """A real model server serves v1 past the layers' 1 m window (no annotation then), then
    walks a canary of v2 that is promoted, and a canary of v1 that is rolled back: each
    layer marks exactly its changes, with the version, within a scrape of the reload."""
    layers = serving_layers()
    v1, v2 = registered_model.champion_version, registered_model.challenger_version

    def spec(champion: str, canary: str | None = None) -> LocalModelSpec:
        uri = f"models:/{registered_model.name}/{{}}"
        return LocalModelSpec(
            name=NAME,
            model_uri=uri.format(champion),
            canary_model_uri=uri.format(canary) if canary else "",
            canary_weight=0.5 if canary else 0.0,
            tracking_uri=registered_model.tracking_uri,
        )

    def serving(prom: PrometheusHandle) -> set[tuple[str, str]]:
        return {
            (s["metric"]["role"], s["metric"]["version"])
            for s in prom.query(f"{SERVING_INFO} == 1")
        }

    with LocalServingManager(tmp_path / "serving", ready_timeout_s=180) as manager:
        status = manager.start(spec(v1))
        metrics = urlparse(status.endpoints.metrics)
        prom: PrometheusHandle = prometheus_factory(
            {"loopline-serving": [metrics.netloc]},
            metrics_path={"loopline-serving": metrics.path or "/metrics"},
        )
        began = time.time()
        prom.wait_until(lambda: serving(prom) == {("champion", v1)}, what="v1 scraped")
        # Nothing changes until the layers' window has passed: then every layer is empty.
        prom.wait_until(
            lambda: not any(prom.query(expr) for expr in layers.values()),
            timeout=90,
            what="the first version's annotation window to pass",
        )
        quiet_from = time.time()
        time.sleep(5)
        steps = [
            (v1, v2, {("champion", v1), ("canary", v2)}),
            (v2, None, {("champion", v2)}),
            (v2, v1, {("champion", v2), ("canary", v1)}),
            (v2, None, {("champion", v2)}),
        ]
        marks: list[tuple[float, float]] = []
        for champion, canary, expected in steps:
            before = time.time()
            manager.update(spec(champion, canary))

            def scraped(e: set[tuple[str, str]] = expected) -> bool:
                return serving(prom) == e

            prom.wait_until(scraped, what=f"{expected} scraped")
            marks.append((before, time.time() + 1))  # + one evaluation step
            time.sleep(3)
        # The last change stays visible for a whole step, as Grafana needs to see it.
        time.sleep(max(0.0, marks[-1][1] + SERVING_STEP_S + 2 - time.time()))
        end = time.time()

    got = {name: annotation_times(prom, expr, began - 5, end) for name, expr in layers.items()}
    for name, times in got.items():
        quiet = [t for ts in times.values() for t in ts if quiet_from <= t < marks[0][0]]
        assert not quiet, f"{name}: annotation while nothing changed, at {quiet}"

    def first(name: str, version: str) -> float:
        return min(got[name][version])

    for name, versions in got.items():
        for version, seen in versions.items():
            since = min(seen)
            shown = [t for t in seen if since <= t < since + SERVING_STEP_S]
            # one evaluation every 30 s cannot miss it (a point lost to a reload's instant)
            assert len(shown) >= SERVING_STEP_S - 2, f"{name} v{version}: shown {len(shown)} s"

    assert set(got["Serving version"]) == {v1, v2}
    assert max(got["Serving version"][v1]) < quiet_from  # v1 came back only as a canary
    assert marks[1][0] <= first("Serving version", v2) <= marks[1][1]
    assert set(got["Canary started"]) == {v1, v2}
    assert marks[0][0] <= first("Canary started", v2) <= marks[0][1]
    assert marks[2][0] <= first("Canary started", v1) <= marks[2][1]
    assert set(got["Canary promoted"]) == {v2}
    assert marks[1][0] <= first("Canary promoted", v2) <= marks[1][1]
    assert set(got["Canary rolled back"]) == {v1}
    assert marks[3][0] <= first("Canary rolled back", v1) <= marks[3][1]
