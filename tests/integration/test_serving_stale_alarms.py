"""No alarm storm during drift, with a real model server and the real drift monitor it samples
to: generated plant traffic with a recipe change makes the monitor confirm drift against the
served version's reference; from then on the responses say `model_state: stale`, the stale
model's threshold verdict (over on nearly every row) raises no alarm event, and a tool breakage
injected on one machine during the drift still does. When the monitor goes away the server
keeps answering, `model_state: unknown`.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from loopline import auth
from loopline.data.generator import GeneratorConfig, generate, live_traffic
from loopline.data.schema import ENTITY, SENSORS, TIMESTAMP
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.server import MonitorServer, build_monitor
from loopline.monitoring.settings import MonitorSettings
from loopline.serving.local import LocalModelSpec, LocalServingManager
from loopline.types.alarms import AlarmPolicy
from loopline.wait import wait_for
from tests.fixtures.serving import v2_tensor_request
from tests.fixtures.training import TrainedModel

NAME = "drill-ae"
# The generator's tool breakage at full severity (loopline.data.faults): torque and current
# drop, vibration and noise rise, the power factor falls; core sensors included.
TOOL_BREAKAGE = {
    "spindle_torque": ("mul", 0.35),
    "spindle_current": ("mul", 0.55),
    "spindle_vibration_rms": ("mul", 1.6),
    "axial_vibration": ("mul", 0.4),
    "acoustic_level": ("add", 10.0),
    "power_factor": ("add", -0.15),
}


@pytest.fixture
def monitor(trained_model: TrainedModel, tmp_path: Path) -> Iterator[MonitorServer]:
    settings = MonitorSettings(
        model=NAME,
        namespace="plant",
        window_size=100,
        window_step=50,
        consecutive_windows=2,
        requester="log",
        state_dir=tmp_path / "monitor-state",
        reference_poll_seconds=0,
    )
    reference = trained_model.reference[list(SENSORS)]
    built = build_monitor(
        settings,
        reference_source=FrameReferenceSource(reference, version=trained_model.version),
        requester=LogRetrainRequester(),
    )
    token = auth.ensure_token_file(tmp_path / "model.token")
    with MonitorServer(built, token=token) as server:
        yield server


DEBOUNCE = AlarmPolicy()  # what a Model without spec.alarms trains with


def drifted_traffic() -> pd.DataFrame:
    """A day after the fixture's training history (same config), the recipe +15 % from the
    first reading, no faults: the generator's drift case."""
    _, manifest = generate(
        GeneratorConfig(machines=2, days=2.0, interval_seconds=60, seed=0, fault_fraction=0.05)
    )
    live, _ = live_traffic(
        manifest,
        minutes=1440,
        recipe_change_at=manifest.end,
        recipe_shift=0.15,
        fault_fraction=0.0,
        sensor_faults_per_day=0,
    )
    return live.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def break_tool(part: pd.DataFrame, machine: str) -> pd.DataFrame:
    broken = part.copy()
    rows = broken[ENTITY] == machine
    for sensor, (how, amount) in TOOL_BREAKAGE.items():
        if how == "mul":
            broken.loc[rows, sensor] *= amount
        else:
            broken.loc[rows, sensor] += amount
    return broken


def columns(response: httpx.Response) -> dict[str, list[Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_stale_model_raises_no_alarm_storm_and_a_fault_still_alarms(
    trained_model: TrainedModel, monitor: MonitorServer, tmp_path: Path
) -> None:
    live = drifted_traffic()
    machines = sorted(live[ENTITY].unique())
    with LocalServingManager(tmp_path / "serving", ready_timeout_s=180) as manager:
        status = manager.start(
            LocalModelSpec(
                name=NAME,
                model_uri=trained_model.version_uri,
                tracking_uri=trained_model.tracking_uri,
                monitor_url=monitor.url,
                sample_rate=1.0,
                token_file=str(tmp_path / "model.token"),
                extra_env={"LOOPLINE_SERVING_DRIFT_POLL_S": "0.2"},
            )
        )
        url = f"{status.endpoints.rest}/v2/models/{NAME}/infer"
        step = 2 * 10  # ten readings per machine per request
        seen: list[dict[str, Any]] = []
        with httpx.Client(timeout=30) as client:

            def send(part: pd.DataFrame) -> dict[str, list[Any]]:
                out = columns(client.post(url, json=v2_tensor_request(part)))
                seen.append(out)
                return out

            # 1. drifted traffic until the answers say stale
            start = 0
            while "stale" not in send(live.iloc[start : start + step])["model_state"]:
                start += step
                assert start < len(live) // 2, "the monitor never confirmed the drift"
                time.sleep(0.05)
            states = {s for out in seen[:-1] for s in out["model_state"]}
            assert "ok" in states, states
            assert "stale" not in states, states
            start += step
            # 2. stale: the threshold is crossed on nearly every row, yet no alarm event
            stale_rows, active_rows = 0, 0
            for _ in range(8):
                out = send(live.iloc[start : start + step])
                start += step
                assert set(out["model_state"]) == {"stale"}
                stale_rows += sum(out["is_anomaly"])
                active_rows += out["alarm_event"].count("active")
            assert stale_rows > 0.8 * 8 * step, stale_rows
            last = seen[-1]["alarm_event"]
            # at most the last debounce window of each machine's event from before the drift
            # was confirmed, then nothing
            assert active_rows <= 2 * DEBOUNCE.window, active_rows
            assert last == ["inactive"] * step, last
            before = client.get(status.endpoints.metrics).text
            # 3. a tool breakage on the first machine, during the drift
            part = break_tool(live.iloc[start : start + step], machines[0])
            out = send(part)
            by_machine: dict[str, list[str]] = {m: [] for m in machines}
            for machine, event in zip(part[ENTITY], out["alarm_event"], strict=True):
                by_machine[machine].append(event)
            # the trained bundle debounces with the default spec.alarms: raiseAt of the window
            k = DEBOUNCE.raise_at
            assert by_machine[machines[0]][k - 1 :] == ["active"] * (10 - k + 1), by_machine
            assert by_machine[machines[1]] == ["inactive"] * 10, by_machine
            text = client.get(status.endpoints.metrics).text
            stale_events = metric(text, "loopline_alarm_events_total", state="stale")
            assert stale_events - metric(before, "loopline_alarm_events_total", state="stale") == 1
            assert metric(text, "loopline_stale_anomaly_rows_total") >= stale_rows
            grpc_states = grpc_outputs(status.endpoints.grpc, live.iloc[start : start + 4])
            assert grpc_states == (["stale"] * 4, 4)
            # 4. the monitor goes away: answers go on, state unknown
            monitor.stop()
            wait_for(
                lambda: set(send(live.iloc[start : start + 2])["model_state"]) == {"unknown"},
                timeout=15,
                what="model_state unknown once the monitor is gone",
            )


def grpc_outputs(target: str, part: pd.DataFrame) -> tuple[list[str], int]:
    """model_state and the length of alarm_event over gRPC, through MLServer's V2 stubs."""
    import grpc
    from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
    from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
    from mlserver.types import InferenceRequest

    body = v2_tensor_request(part)
    for inp in body["inputs"]:
        if inp["datatype"] == "BYTES":  # protobuf's bytes_contents takes bytes
            inp["data"] = [v.encode() for v in inp["data"]]
    request = InferenceRequest.model_validate(body)
    with grpc.insecure_channel(target) as channel, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `construct` method is deprecated")
        stub = GRPCInferenceServiceStub(channel)
        proto = ModelInferRequestConverter.from_types(request, model_name=NAME, use_raw=False)
        response = ModelInferResponseConverter.to_types(stub.ModelInfer(proto))
    got = {
        o.name: [v.decode() if isinstance(v, bytes) else v for v in o.data.root]
        for o in response.outputs
    }
    assert all(re.fullmatch(r"(in)?active", v) for v in got["alarm_event"])
    return got["model_state"], len(got["alarm_event"])
