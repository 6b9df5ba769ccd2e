"""Caller labels of the usage metrics: sanitized, bounded, verified identities first; and the
runtime counting requests, rows, fallbacks, errors and latency per caller and version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlserver.errors import MLServerError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, Parameters, RequestInput
from prometheus_client import CollectorRegistry

from loopline.data.schema import SENSORS
from loopline.serving.callers import (
    INVALID_TOKEN,
    OTHER,
    UNAUTHENTICATED,
    UNKNOWN,
    CallerLabels,
    sanitize,
)
from loopline.serving.metrics import serving_metrics
from loopline.serving.runtime import LooplineRuntime
from loopline.serving.settings import ServingSettings
from tests.fixtures.serving import sensor_rows


def test_sanitize_keeps_safe_characters_and_bounds_the_length() -> None:
    assert sanitize("  historian-01 ") == "historian-01"
    assert sanitize('mes/line 3{x="1"}') == "mes/line_3_x__1__"
    assert sanitize("a" * 200) == "a" * 64
    assert sanitize("   ") == UNKNOWN
    assert sanitize("\n") == UNKNOWN


def test_missing_caller_is_unknown_and_does_not_use_the_budget() -> None:
    labels = CallerLabels(max_callers=1)
    assert labels.label(None) == UNKNOWN
    assert labels.label("") == UNKNOWN
    assert labels.label("mes") == "mes"
    assert labels.callers == {"mes"}


def test_callers_past_the_maximum_are_other() -> None:
    labels = CallerLabels(max_callers=2)
    assert [labels.label(c) for c in ("mes", "historian", "qa-notebook", "mes")] == [
        "mes",
        "historian",
        OTHER,
        "mes",
    ]
    # many distinct values: still two labels of their own, nothing memoised past the bound
    seen = {labels.label(f"scan-{i}") for i in range(5000)}
    assert seen == {OTHER}
    assert len(labels._memo) <= 1024
    assert labels.callers == {"mes", "historian"}


def test_allow_list_names_the_only_callers_with_their_own_label() -> None:
    labels = CallerLabels(allowed=["mes", "historian"], max_callers=50)
    assert labels.label("historian") == "historian"
    assert labels.label("qa-notebook") == OTHER
    assert labels.label(None) == UNKNOWN


def test_a_verified_service_account_wins_over_the_header() -> None:
    labels = CallerLabels()
    subject = "system:serviceaccount:plant:historian"
    assert labels.label("mes", subject=subject) == "sa:plant/historian"
    assert labels.label(None, subject=subject) == "sa:plant/historian"
    # a verified user who is not a ServiceAccount is counted by name, never by the header
    assert labels.label("mes", subject="alice@plant.example") == "user:alice@plant.example"
    assert labels.label("mes", subject="system:serviceaccount:plant") == (
        "user:system:serviceaccount:plant"
    )


def test_a_verified_identity_is_not_cut_to_the_header_length() -> None:
    namespace = "n" * 63
    labels = CallerLabels()
    first = labels.label(None, subject=f"system:serviceaccount:{namespace}:historian")
    second = labels.label(None, subject=f"system:serviceaccount:{namespace}:historian-2")
    assert first == f"sa:{namespace}/historian"
    assert second == f"sa:{namespace}/historian-2"


def test_a_refused_token_is_unauthenticated_whatever_the_header_says() -> None:
    labels = CallerLabels(max_callers=0)  # no budget: still its own label, like `unknown`
    assert labels.label("mes", subject=INVALID_TOKEN) == UNAUTHENTICATED
    assert labels.label(None, subject=INVALID_TOKEN) == UNAUTHENTICATED


def test_a_header_cannot_claim_a_verified_identity() -> None:
    labels = CallerLabels()
    assert labels.label("sa:kube-system/admin") == OTHER
    assert labels.label("user:alice") == OTHER
    assert labels.label("unauthenticated") == OTHER


def test_negative_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_callers"):
        CallerLabels(max_callers=-1)


def test_caller_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_SERVING_CALLERS", '["mes", "historian"]')
    monkeypatch.setenv("LOOPLINE_SERVING_MAX_CALLERS", "5")
    settings = ServingSettings()
    assert settings.callers == ["mes", "historian"]
    assert settings.max_callers == 5


def test_caller_labels_survive_a_reload_of_the_same_settings() -> None:
    metrics = serving_metrics(CollectorRegistry())
    first = metrics.callers("drill-ae", [], 1)
    assert first.label("mes") == "mes"
    assert metrics.callers("drill-ae", [], 1) is first  # a reload: same budget
    assert metrics.callers("drill-ae", [], 1).label("historian") == OTHER
    assert metrics.callers("drill-ae", ["historian"], 1) is not first


def request(x: np.ndarray, caller: str | None, protocol: str = "rest") -> InferenceRequest:
    headers = {"content-type": "application/json" if protocol == "rest" else "application/grpc"}
    if caller is not None:
        headers["loopline-caller"] = caller
    return InferenceRequest(
        inputs=[
            RequestInput(
                name="features", datatype="FP32", shape=list(x.shape), data=x.reshape(-1).tolist()
            )
        ],
        parameters=Parameters(headers=headers),
    )


async def runtime_with(bundle_dir: Path, registry: CollectorRegistry, **extra: Any) -> Any:
    runtime = LooplineRuntime(
        ModelSettings(
            name="drill-ae",
            implementation=LooplineRuntime,
            parameters=ModelParameters(uri=str(bundle_dir), extra=extra),
        )
    )
    runtime.metrics = serving_metrics(registry)
    assert await runtime.load()
    return runtime


async def test_runtime_counts_usage_per_caller_and_version(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await runtime_with(bundle_dir, registry, callers=["mes", "historian"])
    version = str(bundle_dir)
    x = sensor_rows(4, seed=1)
    with_fallback = x.copy()
    with_fallback[[0, 2], SENSORS.index("feed_rate")] = np.nan
    await runtime.predict(request(x, "mes"))
    await runtime.predict(request(with_fallback, "mes", protocol="grpc"))
    await runtime.predict(request(x[:1], "historian"))
    await runtime.predict(request(x[:1], "intruder"))
    await runtime.predict(request(x[:1], None))
    bad = x.copy()
    bad[0, SENSORS.index("spindle_vibration_rms")] = np.nan  # a core sensor: 422
    with pytest.raises(MLServerError):
        await runtime.predict(request(bad, "historian"))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model": "drill-ae", "version": version, **labels})

    requests = "loopline_usage_requests_total"
    assert value(requests, caller="mes", outcome="ok") == 2
    assert value(requests, caller="historian", outcome="ok") == 1
    assert value(requests, caller="historian", outcome="client_error") == 1
    assert value(requests, caller=OTHER, outcome="ok") == 1
    assert value(requests, caller=UNKNOWN, outcome="ok") == 1
    assert value("loopline_usage_rows_total", caller="mes") == 8
    assert value("loopline_usage_fallback_rows_total", caller="mes") == 2
    assert value("loopline_usage_fallback_rows_total", caller="historian") == 0
    assert value("loopline_usage_latency_seconds_count", caller="mes") == 2
    assert value("loopline_usage_latency_seconds_count", caller="historian") == 1
    # the series the canary judgement and the serving dashboard read are unchanged
    assert value("loopline_scored_rows_total") == 8 + 1 + 1 + 1
    assert value("loopline_inference_requests_total", protocol="rest", outcome="client_error") == 1


async def test_refusals_before_the_runtime_carry_the_caller(bundle_dir: Path) -> None:
    registry = CollectorRegistry()
    runtime = await runtime_with(bundle_dir, registry)
    runtime.refused("rest", MLServerError("bad body", 400), caller="historian")
    assert (
        registry.get_sample_value(
            "loopline_usage_requests_total",
            {
                "model": "drill-ae",
                "version": str(bundle_dir),
                "caller": "historian",
                "outcome": "client_error",
            },
        )
        == 1
    )
