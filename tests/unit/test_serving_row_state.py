"""The runtime's per-row `model_state` and `alarm_event` outputs and the metrics that count
stale anomalies and alarm events apart, in-process on a real bundle folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, Parameters, RequestInput
from prometheus_client import CollectorRegistry

from loopline.models.bundle import ModelBundle
from loopline.serving.metrics import serving_metrics
from loopline.serving.runtime import LooplineRuntime
from tests.fixtures.serving import sensor_rows


async def loaded(uri: str, registry: CollectorRegistry, **extra: Any) -> LooplineRuntime:
    runtime = LooplineRuntime(
        ModelSettings(
            name="drill-ae",
            implementation=LooplineRuntime,
            parameters=ModelParameters(uri=uri, extra=extra),
        )
    )
    runtime.metrics = serving_metrics(registry)
    assert await runtime.load()
    return runtime


def request(x: np.ndarray, machines: list[str] | None) -> InferenceRequest:
    inputs = [
        RequestInput(
            name="features", datatype="FP32", shape=list(x.shape), data=x.reshape(-1).tolist()
        )
    ]
    if machines is not None:
        inputs.append(
            RequestInput(name="machine_id", datatype="BYTES", shape=[len(machines)], data=machines)
        )
    return InferenceRequest(
        inputs=inputs, parameters=Parameters(headers={"content-type": "application/json"})
    )


def outputs_of(response: Any) -> dict[str, list[Any]]:
    return {
        o.name: [v.decode() if isinstance(v, bytes) else v for v in o.data.root]
        for o in response.outputs
    }


def anomalous(bundle_dir: Path, n: int) -> np.ndarray:
    x = sensor_rows(n, seed=5) * 4.0
    assert ModelBundle.load_dir(bundle_dir).score(x)["is_anomaly"].all()
    return x


async def test_without_a_monitor_rows_say_unknown(bundle_dir: Path) -> None:
    runtime = await loaded(str(bundle_dir), CollectorRegistry())
    out = outputs_of(await runtime.predict(request(sensor_rows(4), ["a", "b", "a", "b"])))
    assert out["model_state"] == ["unknown"] * 4
    assert out["alarm_event"] == ["inactive"] * 4
    names = [t.name for t in (await runtime.metadata()).outputs or []]
    assert names[-2:] == ["model_state", "alarm_event"]


async def test_stale_anomalies_and_alarm_events_are_counted_apart(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await loaded(str(bundle_dir), registry)
    version = str(bundle_dir)
    assert runtime.drift is not None
    x = anomalous(bundle_dir, 8)
    # default spec.alarms: 5 of the last 8 raise an event; machine b sees only three rows
    out = outputs_of(await runtime.predict(request(x, ["a", "a", "a", "b", "b", "b", "a", "a"])))
    assert out["alarm_event"] == ["inactive"] * 7 + ["active"]
    labels = {"model": "drill-ae", "version": version}
    assert (
        registry.get_sample_value("loopline_alarm_events_total", labels | {"state": "unknown"}) == 1
    )
    assert registry.get_sample_value("loopline_stale_anomaly_rows_total", labels) is None

    runtime.drift.update({"reference": {"version": version}, "driftConfirmed": True})
    out = outputs_of(await runtime.predict(request(x[:2], ["b", "b"])))
    assert out["model_state"] == ["stale", "stale"]
    # b's fourth and fifth anomalous readings: the stale model's verdict raises no event
    assert out["alarm_event"] == ["inactive", "inactive"]
    assert registry.get_sample_value("loopline_stale_anomaly_rows_total", labels) == 2
    assert registry.get_sample_value("loopline_anomaly_rows_total", labels) == 10
    stale_events = labels | {"state": "stale"}
    assert registry.get_sample_value("loopline_alarm_events_total", stale_events) is None
    # while stale, a reading far above the entity's own recent scores still alarms
    await runtime.predict(request(sensor_rows(40, seed=7), ["d"] * 40))
    out = outputs_of(await runtime.predict(request(x[:5], ["d"] * 5)))
    assert out["alarm_event"] == ["inactive"] * 4 + ["active"]
    assert registry.get_sample_value("loopline_alarm_events_total", stale_events) == 1

    runtime.drift.update({"reference": {"version": version}, "driftConfirmed": False})
    out = outputs_of(await runtime.predict(request(sensor_rows(1), None)))
    assert out["model_state"] == ["ok"]
    assert out["alarm_event"] == ["inactive"]
    await runtime.unload()
