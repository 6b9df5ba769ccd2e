"""Generated plant traffic through a real monitor over HTTP: quiet while the plant is steady,
exactly one retraining request after a recipe change, and no decision lost across a restart.

The plant: 10 drilling machines at one reading per 10 minutes (what a 10 % payload sample of
one-minute traffic looks like), parts replaced every ~1.5 days so wear cycles within the
reference. The window (1440 rows) spans one daily cycle; shorter windows would see the shift
pattern itself as drift.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from loopline import auth
from loopline.data.generator import GeneratorConfig, Manifest, generate, live_traffic
from loopline.data.schema import CORE_SENSORS, ENTITY, IS_FAULT, SENSORS, TIMESTAMP
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.server import MonitorServer, build_monitor
from loopline.monitoring.settings import MonitorSettings
from loopline.samples import SAMPLES_PATH, SampleBatch
from loopline.serving.local import LocalModelSpec, LocalServingManager
from tests.fixtures.serving import RegisteredModel, v2_tensor_request

MODEL = "drill-ae"
WINDOW, STEP = 1440, 360


@dataclass
class Plant:
    reference: pd.DataFrame
    manifest: Manifest


@pytest.fixture(scope="module")
def plant() -> Plant:
    history, manifest = generate(
        GeneratorConfig(machines=10, days=14, interval_seconds=600, seed=7, part_life_days=1.5)
    )
    normal = history[history[IS_FAULT] == 0]
    reference = normal.sample(5000, random_state=0)[list(SENSORS)].reset_index(drop=True)
    return Plant(reference=reference, manifest=manifest)


def traffic(
    plant: Plant, days: float, change_after_days: float | None, shift: float
) -> pd.DataFrame:
    change = (
        plant.manifest.end + timedelta(days=change_after_days)
        if change_after_days is not None
        else None
    )
    live, _ = live_traffic(
        plant.manifest, minutes=days * 1440, recipe_change_at=change, recipe_shift=shift
    )
    return live.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def batches(frame: pd.DataFrame, size: int = 120) -> Iterator[dict[str, Any]]:
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        values = part[list(SENSORS)].to_numpy(dtype=np.float64)
        rows = [[None if np.isnan(v) else float(v) for v in row] for row in values]
        batch = SampleBatch(
            model=MODEL,
            modelVersion="1",
            featureNames=list(SENSORS),
            rows=rows,
            machineIds=list(part[ENTITY]),
            decisions=[bool(v) for v in part[IS_FAULT]],
        )
        yield batch.model_dump(mode="json", by_alias=True)


def post_all(client: httpx.Client, url: str, frame: pd.DataFrame) -> None:
    for payload in batches(frame):
        response = client.post(url + SAMPLES_PATH, json=payload)
        assert response.status_code == 202, response.text


def wait_idle(client: httpx.Client, url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(url + "/v1/status").json()
        if status["idle"]:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"monitor not idle after {timeout}s: {status}")
        time.sleep(0.1)


def settings(tmp_path: Path, **kw: Any) -> MonitorSettings:
    base: dict[str, Any] = {
        "model": MODEL,
        "namespace": "plant",
        "window_size": WINDOW,
        "window_step": STEP,
        "consecutive_windows": 3,
        "cooldown_seconds": 3600,
        "requester": "log",
        "state_dir": tmp_path / "state",
        "reference_poll_seconds": 0,
    }
    base.update(kw)
    return MonitorSettings(**base)


def test_stationary_quiet_then_one_request_naming_the_recipe_sensors(
    plant: Plant, tmp_path: Path
) -> None:
    requester = LogRetrainRequester()
    monitor = build_monitor(
        settings(tmp_path),
        reference_source=FrameReferenceSource(plant.reference, version="3"),
        requester=requester,
    )
    live = traffic(plant, days=33, change_after_days=30, shift=0.05)
    change_row = int((live[TIMESTAMP] < plant.manifest.end + timedelta(days=30)).sum())
    with (
        MonitorServer(monitor) as server,
        httpx.Client(timeout=30, headers=server.headers) as client,
    ):
        post_all(client, server.url, live.iloc[:change_row])
        steady = wait_idle(client, server.url)
        assert steady["requests"] == 0, steady["lastRequest"]
        assert steady["driftConfirmed"] is False
        assert steady["stableConsecutive"] >= steady["consecutiveRequired"]
        windows = steady["windowsTested"]
        false_alarm_rate = steady["driftedWindows"] / windows
        print(
            f"\nsteady plant: {windows} windows, false-alarm (drifted-window) rate "
            f"{false_alarm_rate:.3f}, retraining requests 0"
        )
        assert windows >= (change_row - WINDOW) // STEP

        post_all(client, server.url, live.iloc[change_row:])
        after = wait_idle(client, server.url)
        metrics = client.get(server.url + "/metrics").text

    assert len(requester.requests) == 1
    request = requester.requests[0]
    assert {"feed_rate", "spindle_speed"} <= set(request.features)
    assert all(p < 1e-6 for p in request.p_values.values())
    assert after["requests"] == 1
    assert after["decision"] == "cooldown"
    assert (after["driftConfirmed"], after["stableConsecutive"]) == (True, 0)
    assert after["pendingRequest"] is None
    assert 'loopline_retraining_requests_total{model="drill-ae",trigger="drift"} 1.0' in metrics
    request_window = int(request.request_id.rsplit("-w", 1)[1])
    delay_rows = (request_window - windows) * STEP  # within one step of the true delay
    print(
        f"recipe change +5 %: one request ~{delay_rows} rows after it, features {request.features}"
    )


def _serve(tmp_path: Path, reference: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LOOPLINE_STATE_DIR": str(tmp_path / "core-state"),
        auth.TOKEN_FILE_ENV: str(tmp_path / "token"),
    }
    args = [
        sys.executable, "-m", "loopline.cli.main", "monitor", "serve",
        "--model", MODEL, "--namespace", "plant", "--port", str(port),
        "--reference", str(reference), "--state-dir", str(tmp_path / "state"),
        "--set", f"window_size={WINDOW}", "--set", f"window_step={STEP}",
        "--set", "consecutive_windows=3", "--set", "requester=log",
        "--set", "persist_seconds=0", "--set", "reference_poll_seconds=0",
    ]  # fmt: skip
    with (tmp_path / f"monitor-{time.monotonic_ns()}.log").open("wb") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def _ready(client: httpx.Client, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "monitor process exited"
        try:
            if client.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("monitor did not become ready")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_restart_mid_stream_loses_no_decision(plant: Plant, tmp_path: Path) -> None:
    """The monitor is killed (SIGKILL) while drift is being confirmed and again (SIGTERM) during
    the cooldown; the request is raised once, and only once, across the three processes."""
    reference = tmp_path / "reference.parquet"
    plant.reference.to_parquet(reference)
    live = traffic(plant, days=4, change_after_days=2, shift=0.10)
    change_row = int((live[TIMESTAMP] < plant.manifest.end + timedelta(days=2)).sum())
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    headers = auth.bearer_headers(auth.ensure_token_file(tmp_path / "token"))
    try:
        with httpx.Client(timeout=30, headers=headers) as client:
            procs.append(_serve(tmp_path, reference, port))
            _ready(client, url, procs[-1])
            # steady traffic, then the change until drift is seen but not yet confirmed
            post_all(client, url, live.iloc[:change_row])
            cut = change_row
            while True:
                post_all(client, url, live.iloc[cut : cut + STEP])
                cut += STEP
                status = wait_idle(client, url)
                if status["consecutive"] >= 1:
                    break
                assert cut < len(live), "no drift seen at all"
            before = status
            assert before["requests"] == 0
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(timeout=30)

            procs.append(_serve(tmp_path, reference, port))
            _ready(client, url, procs[-1])
            restored = client.get(url + "/v1/status").json()
            for key in ("windowsTested", "driftedWindows", "consecutive", "decision"):
                assert restored[key] == before[key], key
            post_all(client, url, live.iloc[cut : cut + 4 * STEP])
            cut += 4 * STEP
            raised = wait_idle(client, url)
            assert raised["requests"] == 1
            request = raised["lastRequest"]
            assert {"feed_rate", "spindle_speed"} <= set(request["features"])
            procs[-1].send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM.
            assert procs[-1].wait(timeout=60) in (0, -signal.SIGTERM)

            procs.append(_serve(tmp_path, reference, port))
            _ready(client, url, procs[-1])
            post_all(client, url, live.iloc[cut:])
            final = wait_idle(client, url)
            assert final["requests"] == 1, json.dumps(final["lastRequest"])
            assert final["lastRequest"] == request
            assert final["decision"] == "cooldown"
            assert final["windowsTested"] > raised["windowsTested"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_through_a_real_model_server(
    plant: Plant, tmp_path: Path, registered_model: RegisteredModel
) -> None:
    """V2 requests to MLServer with the Loopline runtime, which samples every row to the
    monitor: quiet for 10 steady days, then one request after a +5 % recipe change. Rows whose
    core sensor is missing are left out (the server answers them 422 by design); rows missing
    another sensor go through the fallback and reach the monitor with the gap."""
    requester = LogRetrainRequester()
    monitor = build_monitor(
        settings(tmp_path),
        reference_source=FrameReferenceSource(plant.reference, version="3"),
        requester=requester,
    )
    live = traffic(plant, days=13, change_after_days=10, shift=0.05)
    live = live[live[list(CORE_SENSORS)].notna().all(axis=1)].reset_index(drop=True)
    change_row = int((live[TIMESTAMP] < plant.manifest.end + timedelta(days=10)).sum())
    # The model server and the monitor share the Model's token, as the operator sets them up.
    token_file = tmp_path / "model.token"
    with (
        MonitorServer(monitor, token=auth.ensure_token_file(token_file)) as server,
        LocalServingManager(tmp_path / "serving", ready_timeout_s=180) as manager,
        httpx.Client(timeout=60) as client,
    ):
        rest = manager.start(
            LocalModelSpec(
                name=MODEL,
                model_uri=registered_model.champion_uri,
                tracking_uri=registered_model.tracking_uri,
                monitor_url=server.url,
                sample_rate=1.0,
                token_file=str(token_file),
            )
        ).endpoints.rest

        def infer(frame: pd.DataFrame) -> None:
            for start in range(0, len(frame), 120):
                part = frame.iloc[start : start + 120]
                response = client.post(
                    f"{rest}/v2/models/{MODEL}/infer", json=v2_tensor_request(part)
                )
                assert response.status_code == 200, response.text

        def settled(rows: int) -> dict[str, Any]:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = wait_idle(client, server.url)
                if status["received"] >= rows:
                    return status
                time.sleep(0.2)
            pytest.fail(f"monitor received {status['received']} of {rows} sampled rows")

        infer(live.iloc[:change_row])
        steady = settled(change_row)
        assert steady["requests"] == 0, steady["lastRequest"]
        assert steady["received"] == change_row, "every sampled row arrived, none twice"
        assert steady["dropped"] == 0
        infer(live.iloc[change_row:])
        after = settled(len(live))

    assert len(requester.requests) == 1
    assert {"feed_rate", "spindle_speed"} <= set(requester.requests[0].features)
    assert after["requests"] == 1
    assert after["anomalyRate"] is not None
