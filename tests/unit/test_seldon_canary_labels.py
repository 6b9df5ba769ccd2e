"""What the Seldon Server runs with: the labels its runtime counts a version under, and the
settings the operator puts in the Server's environment.

The runtime is real (a real bundle folder, as Seldon's agent hands it over), loaded the way
Seldon's agent loads a Seldon Model into MLServer: under the name `<seldon model>_<seldon
generation>`, with the Seldon Model's `parameters` copied into `parameters.extra`. No Seldon
runs here; the agent's renaming and copying are reproduced from its documented behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client as k8s
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, RequestInput
from prometheus_client import CollectorRegistry, generate_latest

from loopline.operators.backends.canary_stats import version_stats
from loopline.operators.backends.seldon import (
    SeldonServingBackend,
    monitor_url_from,
)
from loopline.operators.builders.serving import ServingDesired
from loopline.operators.settings import OperatorSettings
from loopline.serving.metrics import serving_metrics
from loopline.serving.runtime import LooplineRuntime
from loopline.serving.seldon import build_model
from loopline.serving.settings import ServingSettings
from tests.fixtures.serving import sensor_rows


def as_seldon_agent_loads(model: dict[str, Any], generation: int, folder: Path) -> ModelSettings:
    """The model settings Seldon's agent writes for a Seldon Model it loads into MLServer."""
    extra = {p["name"]: p["value"] for p in model["spec"].get("parameters", [])}
    return ModelSettings(
        name=f"{model['metadata']['name']}_{generation}",
        implementation=LooplineRuntime,
        parameters=ModelParameters(uri=str(folder), version=str(generation), extra=extra),
    )


def request(rows: np.ndarray) -> InferenceRequest:
    return InferenceRequest(
        inputs=[
            RequestInput(
                name="features", shape=list(rows.shape), datatype="FP32", data=rows.ravel().tolist()
            )
        ]
    )


async def test_a_version_loaded_by_seldons_agent_counts_under_the_model_and_registry_version(
    bundle_dir: Path,
) -> None:
    champion = build_model("drill-ae", "7", "plant", storage_uri="s3://a/7", server="s")
    canary = build_model("drill-ae", "8", "plant", storage_uri="s3://a/8", server="s")
    registry = CollectorRegistry()  # one MLServer process: one registry for both versions
    runtimes = []
    for model, generation in ((champion, 3), (canary, 1)):
        runtime = LooplineRuntime(as_seldon_agent_loads(model, generation, bundle_dir))
        runtime.metrics = serving_metrics(registry)
        assert await runtime.load()
        runtimes.append(runtime)
    for _ in range(3):
        await runtimes[0].predict(request(sensor_rows(2)))
    await runtimes[1].predict(request(sensor_rows(1)))
    assert runtimes[0].name == "drill-ae-v7_3"
    text = generate_latest(registry).decode()
    assert version_stats(text, "drill-ae", "7").requests == 3
    assert version_stats(text, "drill-ae", "7").rows == 6
    assert version_stats(text, "drill-ae", "8").requests == 1
    for runtime in runtimes:
        await runtime.unload()


def test_the_seldon_models_parameters_are_runtime_settings() -> None:
    """The runtime refuses unknown keys in parameters.extra: every parameter a Seldon Model
    carries must be one of its settings."""
    model = build_model("drill-ae", "7", "plant", storage_uri="s3://a/7", server="s")
    extra = {p["name"]: p["value"] for p in model["spec"]["parameters"]}
    settings = ServingSettings.from_sources(extra)
    assert (settings.model_name, settings.version_label) == ("drill-ae", "7")


def test_a_monitor_url_is_qualified_only_where_the_server_needs_it() -> None:
    url = "http://drill-ae-monitor:8080"
    assert monitor_url_from(url, "plant", "plant") == url
    assert monitor_url_from(url, "plant", "seldon-mesh") == "http://drill-ae-monitor.plant:8080"
    assert monitor_url_from("http://m/base/", "plant", "seldon-mesh") == "http://m.plant/base/"
    for kept in ("http://m.plant.svc:8080", "http://10.0.0.7:8080", "http://[fd00::7]:80", ""):
        assert monitor_url_from(kept, "plant", "seldon-mesh") == kept


def _server_env(settings: OperatorSettings, desired: ServingDesired, **kw: Any) -> dict[str, str]:
    backend = SeldonServingBackend(
        settings,
        api=k8s.ApiClient(),  # desired_objects never calls the API server
        storage_uri=lambda name, version: f"s3://mlflow/{name}/{version}",
        **kw,
    )
    server = next(o for o in backend.desired_objects(desired) if o["kind"] == "Server")
    container = server["spec"]["podSpec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


DESIRED = ServingDesired(
    namespace="plant",
    name="drill-ae",
    registered_model="plant.drill-ae",
    champion_version="1",
    monitor_url="http://drill-ae-monitor:8080",
)


def test_the_server_gets_the_monitor_url_and_mlflow_as_pods_reach_it() -> None:
    env = _server_env(
        OperatorSettings(
            seldon_image="runtime:1", cluster_tracking_uri="http://mlflow.loopline-system:5000"
        ),
        DESIRED,
        tracking_uri="http://127.0.0.1:5000",
    )
    assert env["LOOPLINE_SERVING_MONITOR_URL"] == "http://drill-ae-monitor:8080"
    assert env["LOOPLINE_SERVING_TRACKING_URI"] == "http://mlflow.loopline-system:5000"
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == "loopline.serving.runtime.LooplineRuntime"


def test_without_a_cluster_uri_the_server_gets_the_operators_and_the_runtime_image() -> None:
    backend_env = _server_env(
        OperatorSettings(runtime_image="runtime:2", seldon_namespace="seldon-mesh"),
        DESIRED,
        tracking_uri="http://mlflow.loopline-system:5000",
    )
    assert backend_env["LOOPLINE_SERVING_TRACKING_URI"] == "http://mlflow.loopline-system:5000"
    assert backend_env["LOOPLINE_SERVING_MONITOR_URL"] == "http://drill-ae-monitor.plant:8080"
    no_monitor = _server_env(
        OperatorSettings(runtime_image="runtime:2"),
        ServingDesired(
            namespace="plant",
            name="drill-ae",
            registered_model="plant.drill-ae",
            champion_version="1",
        ),
    )
    assert "LOOPLINE_SERVING_MONITOR_URL" not in no_monitor
    assert "LOOPLINE_SERVING_TRACKING_URI" not in no_monitor
    backend = SeldonServingBackend(
        OperatorSettings(runtime_image="runtime:2"), api=k8s.ApiClient(), tracking_uri="x"
    )
    assert backend.image == "runtime:2"


def test_closing_the_metrics_port_is_called_out(caplog: pytest.LogCaptureFixture) -> None:
    """With 8082 closed by the Server pods' NetworkPolicy no canary can be judged (it holds)."""
    with caplog.at_level("WARNING"):
        SeldonServingBackend(
            OperatorSettings(runtime_image="r:1", seldon_open_ports=[9001, 9501]),
            api=k8s.ApiClient(),
        )
    assert "leaves out MLServer's metrics port 8082" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        SeldonServingBackend(OperatorSettings(runtime_image="r:1"), api=k8s.ApiClient())
    assert "8082" not in caplog.text


def test_the_servers_serve_asynchronous_inference_only_with_a_redis() -> None:
    """The MLServer hosts of the Seldon Servers run a worker per loaded model when they get
    the Redis URL (serving/mlserver_async.py)."""
    url = "redis://redis.plant.svc:6379/0"
    on = _server_env(OperatorSettings(runtime_image="r:1", async_redis_url=url), DESIRED)
    assert on["LOOPLINE_ASYNC_REDIS_URL"] == url
    off = _server_env(OperatorSettings(runtime_image="r:1"), DESIRED)
    assert "LOOPLINE_ASYNC_REDIS_URL" not in off
