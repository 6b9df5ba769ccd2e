"""Real model servers with the Loopline runtime on loopback, called over REST and gRPC.

The shared `server` runs under both hosts the local backend knows: the lean server and
MLServer.

The model is registered in a throwaway MLflow by the `registered_model` fixture and loaded by
alias, as on a cluster. Requests and responses use the official V2 types (MLServer's pydantic
types for REST, tritonclient for gRPC), so standard clients are what is tested.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput

from loopline.data.schema import SENSORS
from loopline.serving.local import LocalModelSpec, LocalServingError, LocalServingManager
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-ae"
MAX_ROWS = 256


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingManager]:
    with LocalServingManager(tmp_path_factory.mktemp("serving"), ready_timeout_s=120) as m:
        yield m


@pytest.fixture(scope="module", params=["lean", "mlserver"])
def server(
    request: pytest.FixtureRequest, manager: LocalServingManager, registered_model: RegisteredModel
) -> Iterator[str]:
    """The model under NAME, hosted by the lean server and by MLServer in turn: both hosts
    must give standard V2 clients the same answers and the same errors."""
    spec = LocalModelSpec(
        name=NAME,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        max_rows=MAX_ROWS,
        server=request.param,
    )
    yield manager.start(spec).endpoints.rest
    manager.stop(NAME)


@pytest.fixture(scope="module")
def pyfunc(registered_model: RegisteredModel) -> object:
    """The same version through MLflow's own pyfunc path, in this process (no global MLflow
    URIs are set, so other test modules keep theirs)."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    from loopline.serving.versions import resolve_model_uri

    uri = f"models:/{registered_model.name}/{registered_model.champion_version}"
    files = resolve_model_uri(uri, registered_model.tracking_uri).load_uri
    local = download_artifacts(artifact_uri=files, tracking_uri=registered_model.tracking_uri)
    return mlflow.pyfunc.load_model(local)


def v2_matrix(x: np.ndarray) -> InferenceRequest:
    """One `features` tensor; NaN travels as JSON null."""
    data = [None if v != v else v for v in x.reshape(-1).tolist()]
    return InferenceRequest(
        inputs=[RequestInput(name="features", datatype="FP32", shape=list(x.shape), data=data)]
    )


def infer(rest: str, request: InferenceRequest | dict[str, object]) -> httpx.Response:
    body = (
        request.model_dump(exclude_none=True) if isinstance(request, InferenceRequest) else request
    )
    return httpx.post(f"{rest}/v2/models/{NAME}/infer", json=body, timeout=30)


def outputs(response: httpx.Response) -> dict[str, list[object]]:
    assert response.status_code == 200, response.text
    parsed = InferenceResponse.model_validate(response.json())
    return {o.name: list(o.data.root) for o in parsed.outputs}


def test_rest_scores_match_the_pyfunc_in_process(server: str, pyfunc: object) -> None:
    x = sensor_rows(64, seed=11)
    got = outputs(infer(server, v2_matrix(x)))
    expected = pyfunc.predict(pd.DataFrame(x.astype(np.float64), columns=list(SENSORS)))  # type: ignore[attr-defined]
    np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-5)
    assert got["is_anomaly"] == expected["is_anomaly"].tolist()
    assert got["model"] == expected["model"].tolist() == ["primary"] * 64
    assert set(got["model_version"]) == {"1"}


def test_per_feature_inputs_with_nan_noncore_use_the_fallback(server: str, pyfunc: object) -> None:
    x = sensor_rows(4, seed=12).astype(np.float64)
    x[2, SENSORS.index("acoustic_level")] = np.nan
    inputs = []
    for j, name in enumerate(SENSORS):
        col = [None if np.isnan(v) else float(v) for v in x[:, j]]
        inputs.append({"name": name, "datatype": "FP64", "shape": [4], "data": col})
    inputs.append(
        {"name": "machine_id", "datatype": "BYTES", "shape": [4], "data": ["drill-01"] * 4}
    )
    got = outputs(infer(server, {"inputs": inputs}))
    assert got["model"] == ["primary", "primary", "fallback", "primary"]
    expected = pyfunc.predict(pd.DataFrame(x, columns=list(SENSORS)))  # type: ignore[attr-defined]
    assert expected["model"].tolist() == got["model"]
    np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-5)


def _row(missing: str | None = None) -> list[float | None]:
    row: list[float | None] = [float(v) for v in sensor_rows(1)[0]]
    if missing:
        row[SENSORS.index(missing)] = None
    return row


BAD_PAYLOADS: dict[str, tuple[object, int, str]] = {
    "wrong-shape": (
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1.0] * 5}]},
        400,
        "expected [n, 12]",
    ),
    "wrong-dtype": (
        {"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 12], "data": [1] * 12}]},
        400,
        "FP32 or FP64",
    ),
    "unknown-input": (
        {"inputs": [{"name": "temperature", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        400,
        "unknown input 'temperature'",
    ),
    "empty-batch": (
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [0, 12], "data": []}]},
        400,
        "empty batch",
    ),
    "oversized": (
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [MAX_ROWS + 1, 12],
                    "data": [1.0] * (12 * (MAX_ROWS + 1)),
                }
            ]
        },
        413,
        f"at most {MAX_ROWS}",
    ),
    "missing-core": (
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 12],
                    "data": _row("spindle_torque"),
                }
            ]
        },
        422,
        "spindle_torque",
    ),
    "not-v2": ({"instances": [[1.0]]}, 422, "inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_bad_payloads_are_4xx_with_a_message(server: str, case: str) -> None:
    body, status, needle = BAD_PAYLOADS[case]
    response = infer(server, body)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert needle in response.text
    # and the worker is still fine
    assert infer(server, v2_matrix(sensor_rows(1))).status_code == 200


def test_grpc_with_the_v2_stubs(server: str, manager: LocalServingManager, pyfunc: object) -> None:
    """gRPC through MLServer's generated V2 stubs (tritonclient's stubs define the same proto
    package, so the two cannot be imported into one process)."""
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc.converters import (
        ModelInferRequestConverter,
        ModelInferResponseConverter,
    )
    from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(manager.endpoints(NAME).grpc) as channel, warnings.catch_warnings():
        # MLServer's converters still call pydantic's deprecated `construct`.
        warnings.filterwarnings("ignore", "The `construct` method is deprecated")
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name=NAME)).ready
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME))
        assert [i.name for i in meta.inputs][:12] == list(SENSORS)
        x = sensor_rows(8, seed=13)
        x[5, SENSORS.index("coolant_flow")] = np.nan
        for use_raw in (False, True):
            # Protobuf floats carry NaN itself (JSON needs null, hence not v2_matrix here).
            nan_request = InferenceRequest(
                inputs=[
                    RequestInput(
                        name="features", datatype="FP32", shape=[8, 12], data=x.reshape(-1).tolist()
                    )
                ]
            )
            request = ModelInferRequestConverter.from_types(
                nan_request, model_name=NAME, use_raw=use_raw
            )
            response = ModelInferResponseConverter.to_types(stub.ModelInfer(request))
            got = {o.name: list(o.data.root) for o in response.outputs}
            expected = pyfunc.predict(pd.DataFrame(x.astype(np.float64), columns=list(SENSORS)))  # type: ignore[attr-defined]
            np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-5)
            models = [v.decode() if isinstance(v, bytes) else v for v in got["model"]]
            assert models == expected["model"].tolist()
            assert models[5] == "fallback"

        bad = ModelInferRequestConverter.from_types(
            v2_matrix(np.ones((1, 3), dtype=np.float32)), model_name=NAME
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected [n, 12]" in str(info.value.details())


def test_metrics_are_exposed(server: str, manager: LocalServingManager) -> None:
    x = sensor_rows(3)
    x[0, SENSORS.index("feed_rate")] = np.nan
    assert infer(server, v2_matrix(x)).status_code == 200
    text = httpx.get(manager.endpoints(NAME).metrics, timeout=10).text
    for name in (
        "loopline_inference_requests_total",
        "loopline_inference_latency_seconds_bucket",
        "loopline_inference_batch_size_bucket",
        "loopline_fallback_rows_total",
        "loopline_scored_rows_total",
        'loopline_model_version_info{model="drill-ae",role="champion",task="anomaly-detection",version="1"} 1.0',
    ):
        assert name in text, name
    assert 'outcome="ok",protocol="rest"' in text


def test_health_reflects_loading_and_a_dead_server_is_restarted(
    manager: LocalServingManager, registered_model: RegisteredModel
) -> None:
    spec = LocalModelSpec(
        name="drill-health",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
    )
    manager.start(spec, wait=False)
    rest = manager.endpoints(spec.name).rest
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            code = httpx.get(f"{rest}/v2/health/ready", timeout=2).status_code
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        seen.append(code)
        if code == 200:
            break
        time.sleep(0.05)
    assert seen[-1] == 200
    assert any(code != 200 for code in seen), "the server said ready before the model loaded"

    status = manager.wait_ready(spec.name)
    assert status.pid is not None
    os.kill(status.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = manager.status(spec.name)
        if status.restarts >= 1 and status.state == "ready":
            break
        time.sleep(0.2)
    assert status.restarts >= 1
    assert status.state == "ready"
    assert status.endpoints.rest == rest  # same ports after the restart
    assert (
        httpx.post(
            f"{rest}/v2/models/{spec.name}/infer",
            json=v2_matrix(sensor_rows(1)).model_dump(exclude_none=True),
        ).status_code
        == 200
    )
    manager.stop(spec.name)


def test_update_adds_a_canary_without_a_restart(
    manager: LocalServingManager, registered_model: RegisteredModel
) -> None:
    spec = LocalModelSpec(
        name="drill-canary",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
    )
    pid = manager.start(spec).pid
    rest = manager.endpoints(spec.name).rest
    manager.update(
        LocalModelSpec(
            name=spec.name,
            model_uri=registered_model.champion_uri,
            canary_model_uri=registered_model.challenger_uri,
            canary_weight=1.0,
            tracking_uri=registered_model.tracking_uri,
        )
    )
    assert manager.status(spec.name).pid == pid
    body = v2_matrix(sensor_rows(1)).model_dump(exclude_none=True)
    response = httpx.post(f"{rest}/v2/models/{spec.name}/infer", json=body)
    assert response.json()["model_version"] == registered_model.challenger_version
    manager.stop(spec.name)


def test_a_model_that_cannot_load_fails_start_with_its_log(
    manager: LocalServingManager, registered_model: RegisteredModel
) -> None:
    spec = LocalModelSpec(
        name="drill-missing",
        model_uri=f"models:/{registered_model.name}@no-such-alias",
        tracking_uri=registered_model.tracking_uri,
    )
    with pytest.raises(LocalServingError, match="no-such-alias"):
        manager.start(spec)
    manager.stop(spec.name)


def test_log_is_captured(manager: LocalServingManager, server: str) -> None:
    log = Path(manager.status(NAME).log_path)
    assert log.is_file()
    assert "loaded drill-ae" in log.read_text() or log.stat().st_size > 0


async def test_adaptive_batching_keeps_each_request_its_own_answers(
    manager: LocalServingManager, registered_model: RegisteredModel, pyfunc: object
) -> None:
    """MLServer merges concurrent requests into one batch and splits the outputs back.

    Async on pytest-asyncio's loop rather than `asyncio.run`: with pytest-asyncio 1.0,
    `asyncio.run` unsets the loop the plugin leaves behind, which the GC then reports as
    unclosed at the end of the session (pytest-asyncio#724)."""
    spec = LocalModelSpec(
        name="drill-batched",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        max_batch_size=8,
        max_batch_time=0.05,
    )
    rest = manager.start(spec).endpoints.rest
    rows = [sensor_rows(n, seed=20 + n) for n in (1, 2, 3, 1, 4, 1)]
    rows[4][1, SENSORS.index("feed_rate")] = np.nan

    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *[
                client.post(
                    f"{rest}/v2/models/{spec.name}/infer",
                    json=v2_matrix(x).model_dump(exclude_none=True),
                )
                for x in rows
            ]
        )
        metrics = (await client.get(manager.endpoints(spec.name).metrics)).text
    for x, response in zip(rows, responses, strict=True):
        got = outputs(response)
        expected = pyfunc.predict(pd.DataFrame(x.astype(np.float64), columns=list(SENSORS)))  # type: ignore[attr-defined]
        assert len(got["anomaly_score"]) == len(x)
        np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-5)
        assert got["model"] == expected["model"].tolist()
    batched = [
        line
        for line in metrics.splitlines()
        if line.startswith('loopline_inference_batch_size_count{model="drill-batched"}')
    ]
    assert batched, "no batch-size series for the batched model"
    assert float(batched[0].split()[-1]) < len(rows), "requests were not merged"
    manager.stop(spec.name)
