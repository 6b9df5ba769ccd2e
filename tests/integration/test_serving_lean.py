"""What the lean server does on its own, beyond the V2 behaviour both hosts share (that is
`test_serving_server.py`): its HTTP edges, its reload contract and gRPC errors.

A real lean server process on loopback, with a model registered in a throwaway MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

from loopline import auth, supervisor
from loopline.serving.local import (
    LocalModelSpec,
    LocalServingError,
    LocalServingManager,
    ServerStatus,
    free_port,
    lean_command,
    model_settings,
    server_settings,
)
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-lean"
BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingManager]:
    with LocalServingManager(tmp_path_factory.mktemp("lean"), ready_timeout_s=120) as m:
        yield m


@pytest.fixture(scope="module")
def spec(registered_model: RegisteredModel) -> LocalModelSpec:
    return LocalModelSpec(
        name=NAME,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="lean",
        extra_env={"LOOPLINE_SERVING_MAX_REQUEST_BYTES": str(BODY_LIMIT)},
    )


@pytest.fixture(scope="module")
def rest(manager: LocalServingManager, spec: LocalModelSpec) -> str:
    return manager.start(spec).endpoints.rest


def _infer(rest: str, body: bytes, name: str = NAME) -> httpx.Response:
    return httpx.post(
        f"{rest}/v2/models/{name}/infer",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )


def _ok_body(rows: int = 1) -> bytes:
    x = sensor_rows(rows)
    tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    return json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}).encode()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"inputs": [', 400, "not valid JSON"),
        (b'{"inputs": [{"name": "features", "shape": [1, 12]}]}', 422, "inputs.0.datatype"),
        (b"[]", 422, "not an Open Inference Protocol request"),
    ],
    ids=["truncated-json", "missing-datatype", "not-an-object"],
)
def test_malformed_bodies_name_what_is_wrong(
    rest: str, body: bytes, status: int, needle: str
) -> None:
    response = _infer(rest, body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


def test_a_body_over_the_limit_is_413_before_parsing(rest: str) -> None:
    response = _infer(rest, b"{" + b" " * BODY_LIMIT + b"}")
    assert response.status_code == 413, response.text
    assert str(BODY_LIMIT) in response.json()["error"]
    assert _infer(rest, _ok_body()).status_code == 200


def test_unknown_models_paths_and_methods(rest: str) -> None:
    response = _infer(rest, _ok_body(), name="no-such-model")
    assert response.status_code == 404
    assert NAME in response.json()["error"]  # says what the server does host
    assert httpx.get(f"{rest}/v2/models/{NAME}/infer").status_code == 405
    assert httpx.get(f"{rest}/v2/nothing/here").status_code == 404
    extra = httpx.post(f"{rest}/v2/models/{NAME}/ready/infer", content=_ok_body())
    assert extra.status_code == 404, extra.text
    versioned = httpx.post(
        f"{rest}/v2/models/{NAME}/versions/1/infer",
        content=_ok_body(),
        headers={"content-type": "application/json"},
    )
    assert versioned.status_code == 200, versioned.text
    meta = httpx.get(f"{rest}/v2/models/{NAME}").json()
    assert meta["name"] == NAME
    assert {i["name"] for i in meta["inputs"]} >= {"spindle_torque", "machine_id"}
    assert "features" in meta["parameters"]["alternative_inputs"]
    assert httpx.get(f"{rest}/v2").json()["name"] == "loopline"


def test_a_failed_reload_keeps_the_loaded_version_serving(
    manager: LocalServingManager, rest: str, spec: LocalModelSpec, registered_model: RegisteredModel
) -> None:
    from dataclasses import replace

    pid = manager.status(NAME).pid
    broken = replace(
        spec, canary_model_uri=f"models:/{registered_model.name}@no-such-alias", canary_weight=0.5
    )
    with pytest.raises(LocalServingError, match="no-such-alias"):
        manager.update(broken, wait=False)
    response = _infer(rest, _ok_body())
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == registered_model.champion_version
    assert manager.status(NAME).pid == pid
    manager.update(spec)  # back to the good files for the other tests


def test_grpc_errors_and_health(manager: LocalServingManager, rest: str) -> None:
    with grpc.insecure_channel(manager.endpoints(NAME).grpc) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="other")).ready
        assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "loopline"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pb.ModelInferRequest(model_name="other"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pb.ModelInferRequest(model_name=NAME))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        torn = pb.ModelInferRequest(model_name=NAME, raw_input_contents=[b"\x00" * 7])
        torn.inputs.add(name="features", datatype="FP32", shape=[1, 12])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(torn)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw contents of 7 bytes" in str(info.value.details())
        other = pb.ModelInferRequest(model_name=NAME, raw_input_contents=[b"\x00" * 7])
        other.inputs.add(name="features", datatype="INT32", shape=[1, 12])  # MLServer's converter
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(other)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelInferRequest" in str(info.value.details())


def test_sigterm_stops_the_server_cleanly(
    tmp_path: Path, spec: LocalModelSpec, registered_model: RegisteredModel
) -> None:
    """The supervisor stops servers with SIGTERM: REST, gRPC and the runtime shut down and
    the process exits 0, so a stop is never mistaken for a crash."""
    rest_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (tmp_path / "settings.json").write_text(
        json.dumps(server_settings(rest_port, grpc_port, metrics_port))
    )
    model_dir = tmp_path / "models" / NAME
    model_dir.mkdir(parents=True)
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings(spec)))
    log = tmp_path / "server.log"
    auth.ensure_token_file(tmp_path / auth.TOKEN_FILE)
    env = {**os.environ, auth.TOKEN_FILE_ENV: str(tmp_path / auth.TOKEN_FILE)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            lean_command(tmp_path), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{rest_port}/v2/health/ready"
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


def _crash(manager: LocalServingManager) -> list[subprocess.Popen[bytes]]:
    """What SIGKILL does to an operator: supervision ends, its servers run on (their own
    sessions). In-process, so the test still holds the old process objects: it reaps them
    once they have ended (a real operator's children are reaped by init)."""
    manager._supervisor.halt()
    manager._http.close()
    own = [s.watched for s in manager._servers.values() if not s.watched.adopted]
    records = [w.record for w in own]
    children = [supervisor.child_process(r.pid) for r in records if r is not None]
    return [p for p in children if p is not None]


def _left_running(
    folder: Path, registered_model: RegisteredModel
) -> tuple[LocalModelSpec, ServerStatus, list[subprocess.Popen[bytes]]]:
    """A ready server whose manager then crashed: its spec, its status, the process objects
    to reap at the end."""
    spec = LocalModelSpec(
        name="drill-orphan",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
    )
    crashed = LocalServingManager(folder)
    status = crashed.start(spec)
    assert status.pid is not None
    return spec, status, _crash(crashed)


def _gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_server_left_by_a_killed_manager_is_adopted_on_its_ports(
    tmp_path: Path, registered_model: RegisteredModel
) -> None:
    """The next manager on the folder adopts the leftover: same pid and endpoints (clients
    keep their URL and no request fails while the operator restarts), supervised from then on:
    if it dies it is restarted on the same ports, and close() stops it."""
    spec, before, leftovers = _left_running(tmp_path, registered_model)
    with LocalServingManager(tmp_path) as manager:
        status = manager.start(spec, wait=False)
        assert (status.pid, status.endpoints, status.state) == (
            before.pid,
            before.endpoints,
            "ready",
        )
        assert _infer(status.endpoints.rest, _ok_body(), name=spec.name).status_code == 200
        # The adopted process dies: the new manager restarts it, as its own child, same ports.
        os.kill(before.pid, signal.SIGKILL)
        assert _gone(before.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and manager.status(spec.name).pid == before.pid:
            time.sleep(0.1)
        restarted = manager.wait_ready(spec.name)
        assert restarted.pid != before.pid
        assert restarted.restarts == 1
        assert restarted.endpoints == before.endpoints
        assert "adopted process" in restarted.last_error
        response = _infer(restarted.endpoints.rest, _ok_body(), name=spec.name)
        assert response.status_code == 200, response.text
        new_pid = restarted.pid
    assert new_pid is not None
    assert _gone(new_pid)
    assert [p.wait(timeout=15) for p in leftovers] == [-signal.SIGKILL]


def test_a_leftover_is_reloaded_for_a_new_spec_and_replaced_when_its_code_differs(
    tmp_path: Path, registered_model: RegisteredModel
) -> None:
    """Adoption covers what a hot reload can change (the served versions, the canary); a
    leftover started with another environment (or another install, or another kind of
    server) is stopped, not leaked, and a new one starts."""
    spec, first, leftovers = _left_running(tmp_path, registered_model)
    canary = replace(spec, canary_model_uri=registered_model.challenger_uri, canary_weight=1.0)
    again = LocalServingManager(tmp_path)
    reloaded = again.start(canary)
    assert (reloaded.pid, reloaded.endpoints) == (first.pid, first.endpoints)
    answer = _infer(reloaded.endpoints.rest, _ok_body(), name=spec.name).json()
    assert answer["model_version"] == registered_model.challenger_version
    assert _crash(again) == []  # it adopted the process, it did not start one
    other_env = replace(canary, extra_env={"LOOPLINE_SERVING_MAX_REQUEST_BYTES": "65536"})
    with LocalServingManager(tmp_path) as manager:
        replaced = manager.start(other_env)
        assert replaced.pid != first.pid
        assert _gone(first.pid)
        answer = _infer(replaced.endpoints.rest, _ok_body(), name=spec.name).json()
        assert answer["model_version"] == registered_model.challenger_version
    assert [p.wait(timeout=15) for p in leftovers] == [0]  # stopped cleanly, on SIGTERM
