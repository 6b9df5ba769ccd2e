"""The demo's callers: the historian's queued requests, the Prometheus it reads usage from, the
callers' own view of their traffic, and the fault the scenario injects into the live stream.

The historian runs here against a stand-in for the server's async routes (an httpx transport
that queues, answers and refuses as docs/serving.md says the lean server does); the real
server path, Redis and Prometheus run in the e2e test (tests/e2e/test_closed_loop.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from loopline.data.generator import GeneratorConfig, Manifest, generate
from loopline.data.schema import ENTITY, FAULT_TYPE, IS_FAULT, SENSORS
from loopline.demo.callers import answered_by, caller_stats
from loopline.demo.clients import CALLER_HEADER, AsyncRestClient
from loopline.demo.historian import CALLER, ENTITY_PREFIX, Historian
from loopline.demo.live import render
from loopline.demo.record import AsyncSample, DemoRecord, RequestSample
from loopline.demo.traffic import Answer, Plant, PlantStream
from loopline.demo.usage import (
    entries,
    local_metrics_url,
    prometheus_config,
    scrape_target,
    write_config,
)
from loopline.monitoring.usage import UsageRow


@pytest.fixture(scope="module")
def history() -> Manifest:
    return generate(GeneratorConfig(machines=3, days=1, interval_seconds=600, seed=4))[1]


# -- the historian ----------------------------------------------------------------------------


class _AsyncServer:
    """Queues V2 requests by id (a repeated id is queued once) and answers each after one
    pending poll; `version` is the model version it answers with."""

    def __init__(self, version: str = "1", routes: bool = True) -> None:
        self.version = version
        self.routes = routes
        self.queued: dict[str, dict[str, Any]] = {}
        self.polled: dict[str, int] = {}
        self.callers: list[str] = []
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.routes:
            return httpx.Response(404, json={"error": "not found"})
        if request.method == "POST":
            self.posts += 1
            body = json.loads(request.content)
            self.callers.append(request.headers.get(CALLER_HEADER, ""))
            self.queued.setdefault(body["id"], body)
            return httpx.Response(202, json={"id": body["id"], "status": "pending"})
        request_id = request.url.path.rsplit("/", 1)[-1]
        if request_id not in self.queued:
            return httpx.Response(404, json={"error": "unknown id"})
        self.polled[request_id] = self.polled.get(request_id, 0) + 1
        if self.polled[request_id] < 2:
            return httpx.Response(202, json={"id": request_id, "status": "pending"})
        rows = self.queued[request_id]["inputs"][0]["shape"][0]
        outputs = [
            {"name": "is_anomaly", "datatype": "BOOL", "shape": [rows], "data": [False] * rows},
            {"name": "model", "datatype": "BYTES", "shape": [rows], "data": ["primary"] * rows},
            {"name": "model_version", "datatype": "BYTES", "shape": [1], "data": [self.version]},
        ]
        return httpx.Response(200, json={"model_name": "drill-ae", "outputs": outputs})


def _historian(server: _AsyncServer, record: DemoRecord, burst: int = 4) -> Historian:
    client = AsyncRestClient("http://server", "drill-ae", SENSORS, caller=CALLER)
    client._http = httpx.Client(transport=httpx.MockTransport(server))
    return Historian(client, record, burst=burst, every_s=1.0)


def test_historian_queues_bursts_and_fetches_each_answer_once(history: Manifest) -> None:
    stream = PlantStream(history)
    record = DemoRecord()
    server = _AsyncServer()
    historian = _historian(server, record)
    batches = [stream.next_batch() for _ in range(6)]
    for batch in batches:
        historian.feed(batch)
    assert historian.send_burst() == 4  # the latest `burst` requests of the line
    historian.collect(deadline=float("inf"))
    queued = record.async_requests
    assert [a.status for a in queued] == ["ok"] * 4
    assert all(a.polls == 2 and a.model_version == "1" for a in queued)
    assert len({a.id for a in queued}) == 4 == len(server.queued)
    # the first id of the burst was posted twice (a producer's retry) and queued once
    assert (server.posts, historian.resent) == (5, 1)
    assert set(server.callers) == {CALLER}
    # the line's readings, under the historian's own keys, not the machines' alarm windows
    first = server.queued[queued[0].id]
    machines = next(i for i in first["inputs"] if i["name"] == "machine_id")["data"]
    assert machines == [ENTITY_PREFIX + str(m) for m in batches[2][ENTITY]]
    assert historian.send_burst() == 0  # nothing new fed since


def test_historian_stops_without_async_routes(history: Manifest) -> None:
    record = DemoRecord()
    historian = _historian(_AsyncServer(routes=False), record)
    historian.feed(PlantStream(history).next_batch())
    assert historian.send_burst() == 0
    assert "no asynchronous inference" in historian.failed
    assert any("historian sent nothing" in n for n in record.notes)


# -- what the callers saw, and the usage table --------------------------------------------------


def _sync(t: float, caller: str, *, ok: bool = True, version: str = "1") -> RequestSample:
    return RequestSample(
        t=t,
        protocol=caller.rsplit("-", 1)[-1],
        latency_s=0.004,
        rows=6,
        ok=ok,
        caller=caller,
        model_version=version if ok else "",
        fallback_rows=2 if ok else 0,
    )


def test_caller_stats_and_answers_per_caller_and_version() -> None:
    sync = [_sync(1.0, "gateway-rest"), _sync(2.0, "gateway-grpc", version="2")]
    sync.append(_sync(3.0, "gateway-rest", ok=False))
    queued = [
        AsyncSample(
            t=1.0,
            id="a",
            caller=CALLER,
            rows=6,
            ok=True,
            status="ok",
            answered_t=1.5,
            model_version="1",
        ),
        AsyncSample(t=2.0, id="b", caller=CALLER, rows=6),  # still waiting
    ]
    stats = {s.caller: s for s in caller_stats(sync, queued)}
    assert (stats["gateway-rest"].requests, stats["gateway-rest"].errors) == (2, 1)
    assert (stats[CALLER].requests, stats[CALLER].waiting, stats[CALLER].p50_ms) == (2, 1, 500.0)
    assert [s.caller for s in caller_stats(sync, queued, since=1.5)] == [
        "gateway-grpc",
        "gateway-rest",
        CALLER,
    ]
    assert answered_by(sync, queued) == {
        ("gateway-rest", "1"): (1, 6, 2),
        ("gateway-grpc", "2"): (1, 6, 2),
        (CALLER, "1"): (1, 6, 0),
    }


def test_prometheus_scrapes_the_model_server_and_the_monitor(tmp_path: Path) -> None:
    assert scrape_target("http://127.0.0.1:9100") == ("127.0.0.1:9100", "/metrics")
    assert scrape_target("http://127.0.0.1:9100/metrics") == ("127.0.0.1:9100", "/metrics")
    with pytest.raises(ValueError, match="no host and port"):
        scrape_target("http://localhost/metrics")
    endpoints = {
        "REST": "http://127.0.0.1:8000",
        "Metrics": "http://127.0.0.1:8002/metrics",
        "Monitor": "http://127.0.0.1:8100",
    }
    config = prometheus_config(endpoints)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"loopline-model", "loopline-monitor"}
    assert jobs["loopline-model"]["static_configs"] == [{"targets": ["127.0.0.1:8002"]}]
    assert jobs["loopline-monitor"]["metrics_path"] == "/metrics"
    assert yaml.safe_load(write_config(tmp_path, endpoints).read_text()) == config


def test_usage_rows_become_record_entries() -> None:
    row = UsageRow(
        model="drill-ae",
        version="2",
        caller=CALLER,
        requests=10,
        client_errors=1,
        server_errors=2,
        rows=60,
        fallback_rows=6,
        p50_seconds=0.002,
        p95_seconds=0.003,
        p99_seconds=None,
        retired=False,
    )
    (entry,) = entries([row])
    assert (entry.caller, entry.version, entry.requests, entry.errors) == (CALLER, "2", 10, 3)
    assert (entry.rows, entry.fallback_rows, entry.p99_s, entry.retired) == (60, 6, None, False)


def test_live_view_shows_the_callers() -> None:
    record = DemoRecord()
    now = record.now()
    record.add_request(_sync(now, "gateway-rest"))
    record.add_async(AsyncSample(t=now, id="q", caller=CALLER, rows=6))
    console = Console(file=io.StringIO(), width=160)
    console.print(render(record.snapshot(), now=now + 1))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Callers (last 10 s)" in text
    assert "gateway-rest" in text
    assert "async (queued)" in text


# -- the injected fault -------------------------------------------------------------------------


class _Answering:
    protocol = "rest"
    caller = "gateway-rest"

    def infer(self, frame: pd.DataFrame) -> Answer:
        return Answer(is_anomaly=[False] * len(frame), model_version="1")

    def close(self) -> None:
        pass


def test_the_stream_injects_a_labelled_fault_on_one_machine(history: Manifest) -> None:
    plain, faulty = PlantStream(history), PlantStream(history)
    faulty.inject_fault("drill-02", "tool_breakage", readings=3)
    record = DemoRecord()
    plant = Plant(faulty, [_Answering()], record)
    for i in range(5):
        expected, batch = plain.next_batch(), faulty.next_batch()
        plant.send(plant.clients[0], batch)
        hit = batch[ENTITY] == "drill-02"
        torque = SENSORS.index("spindle_torque")
        if i < 3:
            assert batch.loc[hit, IS_FAULT].tolist() == [1]
            assert batch.loc[hit, FAULT_TYPE].tolist() == ["tool_breakage"]
            assert np.allclose(
                batch.loc[hit, SENSORS[torque]], expected.loc[hit, SENSORS[torque]] * 0.35
            )
        else:
            pd.testing.assert_frame_equal(batch, expected)
        # the other machines are untouched
        pd.testing.assert_frame_equal(batch[~hit], expected[~hit])
    (fault,) = record.injected_faults
    assert (fault.kind, fault.machine_id, fault.readings) == ("tool_breakage", "drill-02", 3)
    assert fault.end_t is not None
    assert fault.start_t <= fault.end_t
    assert not faulty.injecting
    with pytest.raises(ValueError, match="readings"):
        faulty.inject_fault("drill-02", "tool_breakage", readings=0)


def test_the_local_model_servers_metrics_port_is_read_from_its_settings(tmp_path: Path) -> None:
    from loopline.serving.local_spec import server_settings

    folder = tmp_path / "demo" / "drill-ae"
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(server_settings(8000, 8001, 8002)))
    assert local_metrics_url(tmp_path, "demo", "drill-ae") == "http://127.0.0.1:8002/metrics"
    assert local_metrics_url(tmp_path, "demo", "other") is None
