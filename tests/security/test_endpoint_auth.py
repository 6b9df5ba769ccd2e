"""Every state-changing endpoint of a model server and a drift monitor takes only the Model's
token: none is 401 (with the Bearer challenge), a wrong one 403, the right one succeeds. What
probes, scrapers and clients call stays open. A forged sample stream changes nothing.

Real processes on loopback: the lean model server and MLServer (through the local serving
manager, which provisions the token file) and `loopline monitor serve` (given the token file's
path in its environment, as the operator does).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import model_repository_pb2 as repo_pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
from mlserver.grpc.model_repository_pb2_grpc import ModelRepositoryServiceStub

from loopline import auth, supervisor
from loopline.ports import free_port
from loopline.serving.local import LocalModelSpec, LocalServingManager
from loopline.wait import wait_for
from tests.fixtures.serving import RegisteredModel, sensor_rows

pytestmark = pytest.mark.security

NAME = "drill-auth"
FEATURES = ["a", "b"]
WINDOW = 50


def _headers(token: str | None) -> dict[str, str]:
    return auth.bearer_headers(token)


def assert_guarded(
    call: Any, token: str, ok: tuple[int, ...] = (200,), *, final: bool = True
) -> None:
    """`call(headers)` is 401 with a Bearer challenge without a token, 403 with another
    token, and one of `ok` with `token` (left out when `final` is False)."""
    missing = call({})
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "authentication required" in missing.text
    not_bearer = call({"authorization": f"Basic {token}"})
    assert not_bearer.status_code == 401, not_bearer.text
    wrong = call(_headers(auth.new_token()))
    assert wrong.status_code == 403, wrong.text
    assert "www-authenticate" not in wrong.headers
    if final:
        right = call(_headers(token))
        assert right.status_code in ok, right.text


def _infer_body() -> dict[str, Any]:
    x = sensor_rows(2)
    tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    return {"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]}


def _proc_text(pid: int, what: str) -> bytes:
    return Path(f"/proc/{pid}/{what}").read_bytes()


# -- model servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingManager]:
    with LocalServingManager(tmp_path_factory.mktemp("auth-serving"), ready_timeout_s=180) as m:
        yield m


@pytest.mark.parametrize("host", ["lean", "mlserver"])
def test_model_server_repository_api_needs_the_token(
    manager: LocalServingManager, registered_model: RegisteredModel, host: str
) -> None:
    name = f"{NAME}-{host}"
    spec = LocalModelSpec(
        name=name,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server=host,
    )
    status = manager.start(spec)
    rest = status.endpoints.rest
    token = auth.read_token_file(manager.token_file(name))
    assert stat_mode(manager.token_file(name)) == 0o600

    with httpx.Client(base_url=rest, timeout=60, trust_env=False) as client:
        # Open: what Kubernetes probes, V2 clients and Prometheus call.
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get(f"/v2/models/{name}/ready").status_code == 200
        assert client.get(f"/v2/models/{name}").status_code == 200
        assert client.get("/v2").status_code == 200
        assert client.post(f"/v2/models/{name}/infer", json=_infer_body()).status_code == 200
        assert httpx.get(status.endpoints.metrics, trust_env=False).status_code == 200

        # Guarded: index reveals state, load and unload change it.
        def index(headers: dict[str, str]) -> httpx.Response:
            return client.post("/v2/repository/index", json={}, headers=headers)

        def load(headers: dict[str, str]) -> httpx.Response:
            return client.post(f"/v2/repository/models/{name}/load", headers=headers)

        def unload(headers: dict[str, str]) -> httpx.Response:
            return client.post(f"/v2/repository/models/{name}/unload", headers=headers)

        assert_guarded(index, token)
        assert [m["name"] for m in index(_headers(token)).json()] == [name]
        assert_guarded(load, token)
        # A refused unload leaves the model serving.
        assert_guarded(unload, token, final=False)
        assert client.post(f"/v2/models/{name}/infer", json=_infer_body()).status_code == 200
        # Unknown repository paths are refused before they are routed: nothing to probe.
        assert client.post("/v2/repository/models/other/unload").status_code == 401
        # The operator's own path: a hot reload with the token works.
        assert manager.update(spec).state == "ready"
        assert unload(_headers(token)).status_code == 200
        assert load(_headers(token)).status_code == 200

    assert_grpc_guarded(status.endpoints.grpc, name, token, host)
    assert_not_exposed(token, status.pid, manager.status(name).to_dict(), status.log_path)
    manager.stop(name)


def test_a_deleted_token_file_is_a_rotation(
    manager: LocalServingManager, registered_model: RegisteredModel
) -> None:
    """Deleting the token file and reconciling gives the server a new token (a restart on
    the same ports, since a running process keeps the token it started with): the old token
    is refused from then on."""
    name = f"{NAME}-rotate"
    spec = LocalModelSpec(
        name=name,
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
        server="lean",
    )
    before = manager.start(spec)
    old = auth.read_token_file(manager.token_file(name))
    manager.token_file(name).unlink()
    after = manager.update(spec)
    new = auth.read_token_file(manager.token_file(name))
    assert new != old
    assert after.endpoints == before.endpoints
    assert after.pid != before.pid
    index = f"{after.endpoints.rest}/v2/repository/index"
    assert httpx.post(index, headers=_headers(old), trust_env=False).status_code == 403
    assert httpx.post(index, headers=_headers(new), trust_env=False).status_code == 200
    manager.stop(name)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def assert_grpc_guarded(target: str, name: str, token: str, host: str) -> None:
    """MLServer's gRPC repository RPCs (on both services) need the token too; the lean
    server has none to guard (UNIMPLEMENTED whatever the credentials)."""
    with grpc.insecure_channel(target) as channel:
        inference = GRPCInferenceServiceStub(channel)
        repository = ModelRepositoryServiceStub(channel)
        assert inference.ServerLive(pb.ServerLiveRequest()).live
        calls = [
            lambda md: inference.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name=name), metadata=md
            ),
            lambda md: repository.RepositoryModelUnload(
                repo_pb.RepositoryModelUnloadRequest(model_name=name), metadata=md
            ),
            lambda md: repository.RepositoryIndex(repo_pb.RepositoryIndexRequest(), metadata=md),
        ]
        for call in calls:
            for metadata, expected in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                (
                    (("authorization", f"Bearer {auth.new_token()}"),),
                    grpc.StatusCode.PERMISSION_DENIED,
                ),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call(metadata)
                if host == "lean":
                    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
                else:
                    assert info.value.code() == expected, info.value.details()
        if host == "mlserver":
            index = repository.RepositoryIndex(
                repo_pb.RepositoryIndexRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            assert [m.name for m in index.models] == [name]
        assert inference.ModelReady(pb.ModelReadyRequest(name=name)).ready


def assert_not_exposed(token: str, pid: int | None, status: dict[str, Any], log: Path) -> None:
    """The token is in no command line (`ps` shows argv to every user), no environment (the
    path to the 0600 file is), no status and no log."""
    assert pid is not None
    secret = token.encode()
    assert secret not in _proc_text(pid, "cmdline")
    assert secret not in _proc_text(pid, "environ")
    assert auth.TOKEN_FILE_ENV.encode() in _proc_text(pid, "environ")
    assert token not in json.dumps(status)
    assert secret not in log.read_bytes()


# -- drift monitor ----------------------------------------------------------------------------


@dataclass
class Monitor:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path


def _reference(path: Path) -> Path:
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(1000, 2)), columns=FEATURES)
    frame.to_parquet(path)
    return path


@contextlib.contextmanager
def running_monitor(
    tmp_path: Path, *, namespace: str = "plant", requester: str = "log", kubeconfig: str = ""
) -> Iterator[Monitor]:
    """`loopline monitor serve` as the operator starts it: the token file's path in its
    environment, nothing secret on its command line."""
    token_file = tmp_path / "tokens" / namespace / f"{NAME}.token"
    token = auth.ensure_token_file(token_file)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_AUTH_")},
        "LOOPLINE_STATE_DIR": str(tmp_path / "core-state"),
        "LOOPLINE_MONITOR_KUBECONFIG": kubeconfig,
        auth.TOKEN_FILE_ENV: str(token_file),
    }
    args = [
        sys.executable, "-m", "loopline.cli.main", "monitor", "serve",
        "--model", NAME, "--namespace", namespace, "--port", str(port),
        "--reference", str(_reference(tmp_path / "reference.parquet")),
        "--state-dir", str(tmp_path / "state"),
        "--set", f"window_size={WINDOW}", "--set", f"window_step={WINDOW}",
        "--set", "consecutive_windows=2", "--set", f"requester={requester}",
        "--set", "reference_poll_seconds=0", "--set", "min_statistic=0",
    ]  # fmt: skip
    log = tmp_path / "monitor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        return httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200

    try:
        wait_for(ready, timeout=120, what=f"monitor ready (log {log})", ignore=(httpx.HTTPError,))
        yield Monitor(url, token, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    with running_monitor(tmp_path) as running:
        yield running


def _batch(rows: np.ndarray, model: str = NAME) -> dict[str, Any]:
    return {"model": model, "modelVersion": "1", "featureNames": FEATURES, "rows": rows.tolist()}


def _shifted(windows: int, seed: int = 2) -> list[dict[str, Any]]:
    """Rows far from the reference (+5 sigma): drift in every window they fill."""
    rng = np.random.default_rng(seed)
    return [_batch(rng.normal(loc=5.0, size=(WINDOW, 2))) for _ in range(windows)]


def _idle(client: httpx.Client, url: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status: dict[str, Any] = client.get(f"{url}/v1/status").json()
        return status if status["idle"] else None

    return wait_for(probe, timeout=60, what="monitor idle")


def test_monitor_sample_and_control_api_need_the_token(monitor: Monitor) -> None:
    with httpx.Client(base_url=monitor.url, timeout=30, trust_env=False) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/v1/status"):
            assert client.get(path).status_code == 200, path

        def samples(headers: dict[str, str]) -> httpx.Response:
            return client.post("/v1/samples", json=_batch(np.zeros((3, 2))), headers=headers)

        def reference(headers: dict[str, str]) -> httpx.Response:
            return client.post("/v1/reference", params={"force": "true"}, headers=headers)

        assert_guarded(samples, monitor.token, (202,))
        assert_guarded(reference, monitor.token)
        # Credentials are checked before the body: a refused caller learns nothing from 422s.
        assert client.post("/v1/samples", content=b"not json").status_code == 401
        status = _idle(client, monitor.url)
        assert status["received"] == 3  # only the authorised batch
    assert_not_exposed(monitor.token, monitor.proc.pid, status, monitor.log)


def test_a_forged_sample_stream_changes_nothing(monitor: Monitor) -> None:
    """Many windows of shifted rows without the token (or with a wrong one) leave the
    monitor undrifted, with no retraining request; the same rows with the token confirm drift,
    so the stream was one the monitor would have acted on."""
    forged = _shifted(windows=8)
    with httpx.Client(base_url=monitor.url, timeout=30, trust_env=False) as client:
        for i, batch in enumerate(forged):
            headers = _headers(auth.new_token()) if i % 2 else {}
            assert client.post("/v1/samples", json=batch, headers=headers).status_code in (401, 403)
        status = _idle(client, monitor.url)
        assert (status["received"], status["windowsTested"], status["requests"]) == (0, 0, 0)
        assert status["driftConfirmed"] is False
        assert status["lastRequest"] is None
        assert 'outcome="drifted"} 1' not in client.get("/metrics").text

        for batch in forged:
            response = client.post("/v1/samples", json=batch, headers=_headers(monitor.token))
            assert response.status_code == 202
        status = _idle(client, monitor.url)
        assert status["driftConfirmed"] is True
        assert status["requests"] == 1


# -- the operator's local monitoring backend --------------------------------------------------

# Parsed at start-up, never contacted: these monitors request no retraining.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_monitor_backend_provisions_sends_and_rotates_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's monitors get the Model's token file (0600, path in their environment),
    the operator's reference reload carries the token, and a deleted file restarts the monitor
    on a new token."""
    from loopline.operators.backends.monitoring import LocalMonitoringBackend
    from loopline.operators.builders.monitoring import MonitorDesired

    desired = MonitorDesired(
        namespace="plant",
        name=NAME,
        champion_version="1",
        detector="ks",
        p_value=0.05,
        window_size=100,
        cooldown_seconds=60,
        retrain_on_drift=False,
    )
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    backend = LocalMonitoringBackend(
        tmp_path / "monitors",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        kubeconfig=tmp_path / "kubeconfig",
        tokens_dir=tmp_path / "tokens",
    )

    def live(url: str) -> bool:
        return httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200

    try:
        url = backend.apply(desired)
        wait_for(lambda: live(url), timeout=90, what="monitor live", ignore=(httpx.HTTPError,))
        path = backend.token_file("plant", NAME)
        assert path == tmp_path / "tokens" / "plant" / f"{NAME}.token"
        assert stat_mode(path) == 0o600
        token = auth.read_token_file(path)

        def reference(headers: dict[str, str]) -> httpx.Response:
            return httpx.post(f"{url}/v1/reference", headers=headers, trust_env=False)

        # 503: no champion in this empty MLflow, so past the check and nothing to load.
        assert_guarded(reference, token, (503,))
        with caplog.at_level("WARNING", logger="loopline.operators.backends.monitoring"):
            backend.reload_reference("plant", NAME)
        assert "(503)" in caplog.text  # the operator's call got past the check
        record = backend._monitors[desired.key].record
        assert token.encode() not in _proc_text(record.pid, "cmdline")
        assert token.encode() not in _proc_text(record.pid, "environ")

        path.unlink()  # rotate
        url = backend.apply(desired)
        wait_for(lambda: not supervisor.alive(record), timeout=30, what="the old monitor gone")
        wait_for(lambda: live(url), timeout=90, what="monitor live", ignore=(httpx.HTTPError,))
        rotated = auth.read_token_file(path)
        assert rotated != token
        assert reference(_headers(token)).status_code == 403
        assert reference(_headers(rotated)).status_code == 503
    finally:
        backend.close()


def test_a_forged_stream_annotates_nothing_on_the_model(
    tmp_path: Path, kube_api: Any, namespace: str, loopline_crds: list[str], cluster: Any
) -> None:
    """With the real requester against the real API server: forged drift leaves the Model
    without a retraining request; the same rows with the token put one on it."""
    from kubernetes import client as k8s

    from loopline.types.common import GROUP, RETRAIN_ANNOTATION, VERSION
    from tests.fixtures.operator import model_manifest

    custom = k8s.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "models", model_manifest(NAME)
    )

    def annotations() -> dict[str, str]:
        model = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "models", NAME)
        return dict(model["metadata"].get("annotations") or {})

    forged = _shifted(windows=8)
    with (
        running_monitor(
            tmp_path,
            namespace=namespace,
            requester="kubernetes",
            kubeconfig=str(cluster.kubeconfig),
        ) as monitor,
        httpx.Client(base_url=monitor.url, timeout=30, trust_env=False) as client,
    ):
        for batch in forged:
            assert client.post("/v1/samples", json=batch).status_code == 401
        status = _idle(client, monitor.url)
        assert (status["received"], status["requests"]) == (0, 0)
        assert RETRAIN_ANNOTATION not in annotations()

        for batch in forged:
            response = client.post("/v1/samples", json=batch, headers=_headers(monitor.token))
            assert response.status_code == 202
        wait_for(
            lambda: RETRAIN_ANNOTATION in annotations(),
            timeout=60,
            what="the authorised drift's retraining request on the Model",
        )
