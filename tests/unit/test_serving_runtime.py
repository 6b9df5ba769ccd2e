"""LooplineRuntime in-process on a real bundle folder: scores, fallback, canary, metrics, samples.

The bundle is real (torch networks through `loopline.models.bundle`), loaded from a local
folder instead of MLflow; the MLflow path is covered by the integration tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlserver.errors import MLServerError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, Parameters, RequestInput
from prometheus_client import CollectorRegistry

from loopline.data.schema import CORE_SENSORS, SENSORS
from loopline.models.bundle import ModelBundle
from loopline.models.pyfunc import predict_frame
from loopline.serving.metrics import serving_metrics
from loopline.serving.runtime import LooplineRuntime, detect_protocol
from loopline.serving.sampling import PendingSample
from tests.fixtures.serving import make_bundle, sensor_rows


def model_settings(uri: str, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="drill-ae",
        implementation=LooplineRuntime,
        parameters=ModelParameters(uri=uri, extra=extra),
    )


async def loaded(uri: str, registry: CollectorRegistry, **extra: Any) -> LooplineRuntime:
    runtime = LooplineRuntime(model_settings(uri, **extra))
    runtime.metrics = serving_metrics(registry)
    assert await runtime.load()
    return runtime


def matrix(x: np.ndarray) -> InferenceRequest:
    return InferenceRequest(
        inputs=[
            RequestInput(
                name="features", datatype="FP32", shape=list(x.shape), data=x.reshape(-1).tolist()
            )
        ],
        parameters=Parameters(headers={"content-type": "application/json", "host": "x"}),
    )


def outputs_of(response: Any) -> dict[str, list[Any]]:
    """Output name -> values, BYTES decoded to str as a V2 client sees them."""
    return {
        o.name: [v.decode() if isinstance(v, bytes) else v for v in o.data.root]
        for o in response.outputs
    }


async def test_scores_equal_the_bundle_and_the_pyfunc(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await loaded(str(bundle_dir), registry)
    bundle = ModelBundle.load_dir(bundle_dir)
    x = sensor_rows(16, seed=3)
    out = outputs_of(await runtime.predict(matrix(x)))
    expected = bundle.score(x)
    np.testing.assert_allclose(out["anomaly_score"], expected["anomaly_score"], rtol=1e-6)
    assert out["is_anomaly"] == expected["is_anomaly"].tolist()
    assert out["model"] == ["primary"] * 16
    frame = predict_frame(bundle, pd.DataFrame(x, columns=list(SENSORS)))
    np.testing.assert_allclose(out["anomaly_score"], frame["anomaly_score"], rtol=1e-5)
    text = registry.get_sample_value(
        "loopline_inference_requests_total",
        {"model": "drill-ae", "version": str(bundle_dir), "protocol": "rest", "outcome": "ok"},
    )
    assert text == 1.0
    assert (
        registry.get_sample_value(
            "loopline_scored_rows_total", {"model": "drill-ae", "version": str(bundle_dir)}
        )
        == 16
    )


async def test_nan_noncore_rows_go_to_the_fallback_in_the_same_request(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await loaded(str(bundle_dir), registry)
    bundle = ModelBundle.load_dir(bundle_dir)
    x = sensor_rows(6, seed=4)
    x[[1, 4], SENSORS.index("feed_rate")] = np.nan
    out = outputs_of(await runtime.predict(matrix(x)))
    assert out["model"] == ["primary", "fallback", "primary", "primary", "fallback", "primary"]
    core = [SENSORS.index(c) for c in CORE_SENSORS]
    fb = bundle.score_fallback(x[[1, 4]][:, core])["anomaly_score"]
    np.testing.assert_allclose([out["anomaly_score"][i] for i in (1, 4)], fb, rtol=1e-6)
    pr = bundle.score(x[[0, 2, 3, 5]])["anomaly_score"]
    np.testing.assert_allclose([out["anomaly_score"][i] for i in (0, 2, 3, 5)], pr, rtol=1e-6)
    assert (
        registry.get_sample_value(
            "loopline_fallback_rows_total", {"model": "drill-ae", "version": str(bundle_dir)}
        )
        == 2
    )


async def test_classification_outputs(tmp_path: Path) -> None:
    from loopline.types.common import Task

    folder = make_bundle(Task.CLASSIFICATION).save(tmp_path / "clf")
    runtime = await loaded(str(folder), CollectorRegistry())
    x = sensor_rows(3, seed=5)
    response = await runtime.predict(matrix(x))
    by_name = {o.name: o for o in response.outputs}
    assert by_name["probabilities"].shape == [3, 4]
    probs = np.asarray(by_name["probabilities"].data.root).reshape(3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert by_name["class_name"].data.root[0].decode() in {
        "none",
        "bearing_wear",
        "tool_breakage",
        "coolant_loss",
    }
    assert [t.name for t in runtime.outputs or []][:3] == [
        "class_index",
        "class_name",
        "probabilities",
    ]


async def test_without_fallback_a_missing_sensor_is_a_422_naming_it(bundle_dir: Path) -> None:
    """spec.serving.fallbackOnMissingSensors: false reaches the server as this setting."""
    registry = CollectorRegistry()
    runtime = await loaded(str(bundle_dir), registry, fallback_on_missing_sensors=False)
    x = sensor_rows(6, seed=4)
    assert outputs_of(await runtime.predict(matrix(x)))["model"] == ["primary"] * 6
    x[[1, 4], SENSORS.index("feed_rate")] = np.nan
    with pytest.raises(MLServerError) as info:
        await runtime.predict(matrix(x))
    assert info.value.status_code == 422
    assert "feed_rate missing (NaN or infinite) in 2 of 6 rows" in str(info.value)
    assert "fallbackOnMissingSensors" in str(info.value)
    assert registry.get_sample_value(
        "loopline_fallback_rows_total", {"model": "drill-ae", "version": str(bundle_dir)}
    ) in (None, 0.0)


async def test_bad_payload_counts_a_client_error(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await loaded(str(bundle_dir), registry)
    with pytest.raises(MLServerError) as info:
        await runtime.predict(matrix(np.zeros((1, 5), dtype=np.float32)))
    assert info.value.status_code == 400
    assert (
        registry.get_sample_value(
            "loopline_inference_requests_total",
            {
                "model": "drill-ae",
                "version": str(bundle_dir),
                "protocol": "rest",
                "outcome": "client_error",
            },
        )
        == 1
    )


async def test_canary_weight_splits_requests(tmp_path: Path) -> None:
    champion = make_bundle(seed=0).save(tmp_path / "champion")
    canary = make_bundle(seed=7).save(tmp_path / "canary")
    runtime = await loaded(
        str(champion), CollectorRegistry(), canary_model_uri=str(canary), canary_weight=0.3
    )
    runtime._random.seed(1)
    x = sensor_rows(1)
    versions = [(await runtime.predict(matrix(x))).model_version for _ in range(400)]
    share = versions.count(str(canary)) / len(versions)
    assert 0.2 < share < 0.4


async def test_canary_weight_without_canary_is_refused(bundle_dir: Path) -> None:
    with pytest.raises(MLServerError, match="canary_model_uri"):
        await loaded(str(bundle_dir), CollectorRegistry(), canary_weight=0.5)


async def test_unknown_setting_is_refused(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown serving setting"):
        await loaded(str(bundle_dir), CollectorRegistry(), canary_wieght=0.5)


async def test_sampling_never_blocks_and_drops_when_full(bundle_dir: Path) -> None:
    """The monitor URL points at a closed port: sends fail, requests do not."""
    registry = CollectorRegistry()
    runtime = await loaded(
        str(bundle_dir),
        registry,
        monitor_url="http://127.0.0.1:9",
        sample_rate=1.0,
        sample_queue_size=2,
        sample_timeout_s=0.5,
    )
    try:
        for _ in range(10):  # no await in between: the sender cannot run, the queue fills
            runtime.sampler.offer(
                PendingSample("v", sensor_rows(1), None, None, None, np.zeros(1, bool))
            )
        assert (
            registry.get_sample_value(
                "loopline_samples_total", {"model": "drill-ae", "outcome": "dropped"}
            )
            == 8
        )
        await runtime.predict(matrix(sensor_rows(2)))
        await runtime.sampler.drain(5.0)
        failed = registry.get_sample_value(
            "loopline_samples_total", {"model": "drill-ae", "outcome": "failed"}
        )
        assert failed is not None
        assert failed >= 1
    finally:
        await runtime.unload()


def test_protocol_from_headers() -> None:
    rest = InferenceRequest(
        inputs=[], parameters=Parameters(headers={"host": "a", "content-type": "application/json"})
    )
    grpc = InferenceRequest(
        inputs=[], parameters=Parameters(headers={"user-agent": "grpc-python/1.6"})
    )
    assert detect_protocol(rest) == "rest"
    assert detect_protocol(grpc) == "grpc"
    assert detect_protocol(InferenceRequest(inputs=[])) == "unknown"


async def test_a_folder_served_under_a_seldon_name_reports_its_version(bundle_dir: Path) -> None:
    """Seldon's agent hands the runtime a downloaded folder; the name carries the version."""
    runtime = LooplineRuntime(
        ModelSettings(
            name="drill-ae-v7",
            implementation=LooplineRuntime,
            parameters=ModelParameters(uri=str(bundle_dir)),
        )
    )
    registry = CollectorRegistry()
    runtime.metrics = serving_metrics(registry)
    assert await runtime.load()
    response = await runtime.predict(matrix(sensor_rows(1)))
    assert response.model_version == "7"
    assert runtime.model_label == "drill-ae"
    assert (
        registry.get_sample_value(
            "loopline_model_version_info",
            {"model": "drill-ae", "version": "7", "role": "champion", "task": "anomaly-detection"},
        )
        == 1
    )
