"""`loopline serve pod`, the process of every model server pod of the `kubernetes` serving
backend, run here as a real process on this host with a model registered in a throwaway
MLflow: the command becomes the lean server itself (the process the kubelet signals), the
readiness probe's path turns 200 only once both versions are loaded, both versions answer
with the canary weight, the repository API needs the Model's token, and SIGTERM ends it
cleanly while requests are in flight (none of them fails with an HTTP error).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loopline import auth
from loopline.ports import free_ports
from tests.fixtures.cluster import wait_for
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-ae"


class Pod:
    def __init__(
        self, proc: subprocess.Popen[bytes], ports: list[int], log: Path, token: str
    ) -> None:
        self.proc = proc
        self.token = token
        self.rest = f"http://127.0.0.1:{ports[0]}"
        self.metrics = f"http://127.0.0.1:{ports[2]}/metrics"
        self.log = log


@pytest.fixture
def pod(registered_model: RegisteredModel, tmp_path: Path) -> Iterator[Pod]:
    ports = free_ports(3)
    log = tmp_path / "pod.log"
    token = auth.new_token()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loopline.cli.main",
                "serve",
                "pod",
                "--server=lean",
                f"--name={NAME}",
                f"--model-uri=models:/{registered_model.name}/{registered_model.champion_version}",
                f"--canary-uri=models:/{registered_model.name}/{registered_model.challenger_version}",
                "--canary-weight=0.5",
                f"--tracking-uri={registered_model.tracking_uri}",
                f"--dir={tmp_path / 'serving'}",
                f"--http-port={ports[0]}",
                f"--grpc-port={ports[1]}",
                f"--metrics-port={ports[2]}",
            ],
            env={**os.environ, auth.TOKEN_ENV: token, "LOOPLINE_CACHE_DIR": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handle = Pod(proc, ports, log, token)
    try:
        yield handle
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _infer(rest: str) -> httpx.Response:
    x = sensor_rows(1)
    tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    body = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}]})
    return httpx.post(
        f"{rest}/v2/models/{NAME}/infer",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
        trust_env=False,
    )


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def test_serve_pod_is_the_server_and_stops_cleanly(
    pod: Pod, registered_model: RegisteredModel
) -> None:
    wait_for(
        lambda: _status(f"{pod.rest}/v2/health/live") == 200 or pod.proc.poll() is not None,
        timeout=60,
        what="the server to listen",
    )
    assert pod.proc.poll() is None, pod.log.read_text()[-3000:]
    wait_for(
        lambda: _status(f"{pod.rest}/v2/health/ready") == 200,
        timeout=120,
        what=f"the model to load ({pod.log.read_text()[-1500:]})",
    )
    # exec: the process the kubelet signals is the lean server, not a wrapper around it
    cmdline = Path(f"/proc/{pod.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"loopline.serving.lean_server" in cmdline

    versions = {_infer(pod.rest).json()["model_version"] for _ in range(40)}
    assert versions == {registered_model.champion_version, registered_model.challenger_version}
    metrics = httpx.get(pod.metrics, timeout=5, trust_env=False).text
    assert f'version="{registered_model.challenger_version}"' in metrics

    index = f"{pod.rest}/v2/repository/index"
    assert httpx.post(index, timeout=5, trust_env=False).status_code == 401
    authorised = httpx.post(
        index,
        headers=auth.bearer_headers(pod.token),
        timeout=5,
        trust_env=False,
    )
    assert authorised.status_code == 200

    failures: list[int] = []
    answered = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                response = _infer(pod.rest)
            except httpx.TransportError:
                return  # closed for new connections: the Service no longer routes here
            if response.status_code == 200:
                answered += 1
            else:
                failures.append(response.status_code)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    pod.proc.send_signal(signal.SIGTERM)
    code = pod.proc.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert code == 0, pod.log.read_text()[-3000:]
    assert answered > 0
    assert failures == []
