"""The command a Seldon Server runs in the runtime image starts MLServer on loopback.

The runtime image's entry point is `loopline`, so the Server's `mlserver` container names
MLServer's command itself (loopline.serving.seldon.build_server). Here that command runs as it
is, without a container, with this venv's bin directory first on PATH (where the image has
/opt/loopline/venv/bin), the environment the Server gives it (MLSERVER_MODELS_DIR and the
Loopline runtime as the default implementation) and free loopback ports. The image itself is
run in tests/realnode/test_images.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from loopline.serving.seldon import build_server
from tests.fixtures.cluster import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _live(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_server_command_starts_mlserver_on_the_models_dir(tmp_path: Path) -> None:
    server = build_server("drill-ae", "plant", image="loopline/runtime:test")
    (container,) = server["spec"]["podSpec"]["containers"]
    seldon_env = {e["name"]: e["value"] for e in container["env"]}
    models_dir = tmp_path / "agent-models"
    (models_dir / "probe").mkdir(parents=True)
    # A model the server must find in MLSERVER_MODELS_DIR; not loaded at startup (as under
    # Seldon, whose agent loads models later), so its URI need not exist.
    (models_dir / "probe" / "model-settings.json").write_text(
        json.dumps({"name": "probe", "parameters": {"uri": "models:/nowhere@champion"}})
    )
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        **seldon_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MLSERVER_MODELS_DIR": str(models_dir),
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        "MLSERVER_PARALLEL_WORKERS": "0",
        "MLSERVER_LOAD_MODELS_AT_STARTUP": "false",
    }
    log_path = tmp_path / "mlserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            container["command"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: _live(f"http://127.0.0.1:{http_port}/v2/health/live"),
            timeout=90,
            what=f"MLServer started by the Server's command (log: {log_path})",
        )
        # It serves the folder the environment names, with the Loopline runtime by default.
        index = httpx.post(f"http://127.0.0.1:{http_port}/v2/repository/index", json={})
        assert index.status_code == 200
        assert [m["name"] for m in index.json()] == ["probe"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
