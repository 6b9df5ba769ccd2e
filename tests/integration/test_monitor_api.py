"""The HTTP API on a loopback uvicorn: 202 for samples, clear 4xx for bad ones, readiness
follows the reference, metrics in Prometheus text format."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.server import MonitorServer
from loopline.monitoring.service import DriftMonitor
from loopline.monitoring.settings import MonitorSettings

NAMES = ["a", "b"]


class Unavailable:
    """A reference source whose registry has no champion yet."""

    def current_version(self) -> str:
        raise LookupError("no champion alias yet")

    def load(self) -> None:
        raise AssertionError("not reached")


def settings(tmp_path: Path) -> MonitorSettings:
    return MonitorSettings(
        model="m", window_size=50, window_step=50, state_dir=tmp_path, requester="log"
    )


def body(model: str = "m", n: int = 60) -> dict[str, object]:
    rows = np.random.default_rng(0).normal(size=(n, 2)).tolist()
    return {"model": model, "modelVersion": "1", "featureNames": NAMES, "rows": rows}


def test_samples_accepted_tested_and_exported(tmp_path: Path) -> None:
    ref = pd.DataFrame(np.random.default_rng(1).normal(size=(500, 2)), columns=NAMES)
    monitor = DriftMonitor(
        settings(tmp_path),
        reference_source=FrameReferenceSource(ref),
        requester=LogRetrainRequester(),
    )
    with (
        MonitorServer(monitor) as server,
        httpx.Client(base_url=server.url, headers=server.headers) as client,
    ):
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/samples", json=body())
        assert response.status_code == 202
        assert response.json() == {"accepted": 60, "dropped": 0}
        deadline = time.monotonic() + 10
        while client.get("/v1/status").json()["windowsTested"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        wrong = client.post("/v1/samples", json=body(model="other"))
        assert wrong.status_code == 422
        assert "this monitor watches 'm'" in wrong.text
        ragged = body()
        ragged["rows"] = [[1.0]]
        bad = client.post("/v1/samples", json=ragged)
        assert bad.status_code == 422
        assert "featureNames has 2" in bad.text
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'loopline_drift_windows_total{model="m",outcome="stable"} 1.0' in metrics.text
        assert client.post("/v1/reference").json() == {"changed": False, "version": "1"}


def test_not_ready_without_reference_and_samples_counted_as_dropped(tmp_path: Path) -> None:
    monitor = DriftMonitor(
        settings(tmp_path),
        reference_source=Unavailable(),  # type: ignore[arg-type]
        requester=LogRetrainRequester(),
    )
    with (
        MonitorServer(monitor) as server,
        httpx.Client(base_url=server.url, headers=server.headers) as client,
    ):
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "no champion alias yet" in ready.text
        assert client.post("/v1/samples", json=body()).json() == {"accepted": 0, "dropped": 60}
        assert client.post("/v1/reference").status_code == 503
