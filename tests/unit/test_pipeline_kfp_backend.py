"""The `kfp` backend's submit/status functions against a stub KFP API server.

The stub is a tiny HTTP server on 127.0.0.1 that answers the few v2beta1 REST endpoints the
real `kfp.Client` calls (healthz, experiments, runs). It stands in for a KFP API server, which
cannot run here; everything above the HTTP boundary (kfp.Client, its generated API client,
our code) is real. It records requests, so the test checks what was actually sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from loopline.pipelines.compile import COMPILED_DIR
from loopline.pipelines.kfp_backend import (
    experiment_name,
    make_client,
    run_phase,
    run_status,
    submit,
)
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunSpec

SPEC = TrainingRunSpec(
    run_id="drill-ae-3-manual-1",
    namespace="plant",
    model_name="drill-ae",
    task=Task.ANOMALY_DETECTION,
    trigger=Trigger.MANUAL,
    feature_service="all_sensors",
    registered_model_name="plant.drill-ae",
    mlflow_tracking_uri="http://mlflow.invalid",
    feature_repo="/feature_repo",
)


class StubKfp:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.experiments: list[dict[str, Any]] = []
        self.runs: dict[str, dict[str, Any]] = {}


def _handler(stub: StubKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _filter_name(self, query: dict[str, list[str]]) -> str | None:
            if "filter" not in query:
                return None
            return str(json.loads(query["filter"][0])["predicates"][0]["stringValue"])

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            stub.requests.append(("GET", url.path, None))
            if url.path == "/apis/v2beta1/healthz":
                return self._send({"multi_user": False})
            if url.path == "/apis/v2beta1/experiments":
                name = self._filter_name(query)
                found = [e for e in stub.experiments if e["display_name"] == name]
                return self._send({"experiments": found, "total_size": len(found)})
            if url.path == "/apis/v2beta1/runs":
                name = self._filter_name(query)
                found = [r for r in stub.runs.values() if r["display_name"] == name]
                return self._send({"runs": found, "total_size": len(found)})
            if url.path.startswith("/apis/v2beta1/runs/"):
                run = stub.runs.get(url.path.rsplit("/", 1)[1])
                return self._send(run or {"error": "not found"}, 200 if run else 404)
            return self._send({"error": "unknown path"}, 404)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append(("POST", self.path, body))
            if self.path == "/apis/v2beta1/experiments":
                exp = {**body, "experiment_id": f"exp-{len(stub.experiments) + 1}"}
                stub.experiments.append(exp)
                return self._send(exp)
            if self.path == "/apis/v2beta1/runs":
                run = {**body, "run_id": f"run-{len(stub.runs) + 1}", "state": "PENDING"}
                stub.runs[run["run_id"]] = run
                return self._send(run)
            return self._send({"error": "unknown path"}, 404)

    return Handler


@pytest.fixture
def stub() -> Iterator[tuple[StubKfp, str]]:
    state = StubKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_submit_sends_the_golden_package_with_run_name_and_spec(
    stub: tuple[StubKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, host = stub
    client = make_client(host)
    run_id = submit(client, SPEC)
    assert run_id == "run-1"
    assert state.experiments[0]["display_name"] == experiment_name(SPEC)
    posted = next(b for m, p, b in state.requests if m == "POST" and p == "/apis/v2beta1/runs")
    assert posted is not None
    assert posted["display_name"] == SPEC.run_id
    assert posted["experiment_id"] == "exp-1"
    params = posted["runtime_config"]["parameters"]
    assert TrainingRunSpec.model_validate_json(params["spec_json"]) == SPEC
    assert posted["pipeline_spec"]["pipelineInfo"]["name"] == "loopline-training"
    with (COMPILED_DIR / "training.yaml").open() as fh:
        golden = next(yaml.safe_load_all(fh))
    assert posted["pipeline_spec"]["root"] == golden["root"]


def test_submit_is_idempotent_per_run_id(stub: tuple[StubKfp, str]) -> None:
    state, host = stub
    client = make_client(host)
    assert submit(client, SPEC) == submit(client, SPEC) == "run-1"
    assert len(state.runs) == 1
    assert len(state.experiments) == 1


def test_status_maps_states_and_names_the_failed_step(stub: tuple[StubKfp, str]) -> None:
    state, host = stub
    client = make_client(host)
    run_id = submit(client, SPEC)
    assert run_status(client, SPEC, run_id, with_outcome=False).phase == RunPhase.PENDING
    state.runs[run_id] |= {
        "state": "RUNNING",
        "run_details": {
            "task_details": [
                {"display_name": "load-features", "state": "SUCCEEDED"},
                {"display_name": "validate-data", "state": "RUNNING"},
            ]
        },
    }
    running = run_status(client, SPEC, run_id, with_outcome=False)
    assert (running.phase, running.step) == (RunPhase.RUNNING, "validate-data")
    state.runs[run_id] |= {
        "state": "FAILED",
        "finished_at": "2026-01-01T00:00:00Z",
        "run_details": {
            "task_details": [
                {
                    "display_name": "validate-data",
                    "state": "FAILED",
                    "error": {"message": "completeness 0.91 < 0.95"},
                }
            ]
        },
    }
    failed = run_status(client, SPEC, run_id, with_outcome=False)
    assert failed.phase == RunPhase.FAILED
    assert failed.step == "validate-data"
    assert failed.message == "completeness 0.91 < 0.95"
    assert failed.finished_at is not None


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PENDING", RunPhase.PENDING),
        ("RUNNING", RunPhase.RUNNING),
        ("CANCELING", RunPhase.RUNNING),
        ("SUCCEEDED", RunPhase.SUCCEEDED),
        ("FAILED", RunPhase.FAILED),
        ("CANCELED", RunPhase.CANCELLED),
        ("SOMETHING_NEW", RunPhase.RUNNING),
        (None, RunPhase.PENDING),
    ],
)
def test_run_phase(state: str | None, phase: RunPhase) -> None:
    assert run_phase(state) == phase
