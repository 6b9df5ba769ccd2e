"""The demo's simulated plant against a real Loopline model server on loopback (REST, gRPC).

The server is Loopline's local model server process with a registered model from the
serving fixtures (random weights: this checks the plant's protocol and bookkeeping, not the
model). A sensor dies midway and the fallback must answer those rows.
"""

from __future__ import annotations

from pathlib import Path

from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import CORE_SENSORS, SENSORS
from loopline.demo.record import DemoRecord
from loopline.demo.traffic import GrpcClient, InferClient, Plant, PlantStream, RestClient
from loopline.demo.traffic_stats import segment_stats
from loopline.serving.local import LocalModelSpec, LocalServingManager
from loopline.wait import wait_for
from tests.fixtures.serving import RegisteredModel


def test_plant_drives_a_real_server_over_rest_and_grpc(
    registered_model: RegisteredModel, tmp_path: Path
) -> None:
    _, history = generate(GeneratorConfig(machines=3, days=1, interval_seconds=600, seed=1))
    spec = LocalModelSpec(
        name="drill-ae",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
    )
    with LocalServingManager(tmp_path / "serving") as manager:
        endpoints = manager.start(spec).endpoints
        record = DemoRecord(core_features=list(CORE_SENSORS))
        stream = PlantStream(history)
        stream.set_segment("healthy")
        clients: list[InferClient] = [
            RestClient(endpoints.rest, "drill-ae", SENSORS),
            GrpcClient(endpoints.grpc, "drill-ae", SENSORS),
        ]
        plant = Plant(stream, clients, record, rate=20, trace_features=list(CORE_SENSORS)).start()
        try:
            wait_for(
                lambda: len(record.requests) >= 20,
                timeout=30,
                what="20 healthy requests",
            )
            stream.kill_sensor("coolant_flow", segment="dead")
            dead_from = len(record.requests)
            wait_for(
                lambda: len(record.requests) >= dead_from + 20,
                timeout=30,
                what=f"20 requests with coolant_flow dead (from request {dead_from})",
            )
        finally:
            plant.stop()

    stats = segment_stats(record)
    healthy, dead = stats["healthy"], stats["dead"]
    assert healthy.errors == 0, [r.status for r in record.requests if not r.ok][:3]
    assert dead.errors == 0, [r.status for r in record.requests if not r.ok][:3]
    assert healthy.fallback_rate == 0.0
    assert dead.fallback_rate == 1.0
    assert {r.protocol for r in record.requests} == {"rest", "grpc"}
    assert {r.model_version for r in record.requests} == {registered_model.champion_version}
    points = [p for p in record.trace if p.machine_id == "drill-01"]
    assert points
    assert all(p.score is not None and p.threshold is not None for p in points)
    assert {p.model for p in points} == {"primary", "fallback"}
