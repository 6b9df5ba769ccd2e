"""The whole vertical slice with the real backends: no test worker, no replicas: 0.

A Model is applied; the operator runs `python -m loopline.pipelines.run` through the local
pipeline backend (Feast over generated data, the quality gate, torch, MLflow in SQLite) and
serves the registered version with a local model server process through the local serving
backend, with a local drift monitor process beside it; the test then asks the endpoint in status for readiness over the Open Inference
Protocol. Then the Model is deleted and the server process must be gone.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.schema import factory_schema
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest
from tests.fixtures.training import fresh_tracking_uri

pytestmark = pytest.mark.slow
RETRAIN = "loopline.dev/retrain"

DATA = GeneratorConfig(machines=2, days=6, interval_seconds=300, seed=3, fault_fraction=0.08)
REAL_PIPELINE = PIPELINE | {
    "spec": {"pipeline": "training", "parameters": {"epochs": 5, "trainingWindowDays": 30}}
}


@pytest.fixture
def tracking(tmp_path: Path, _empty_mlflow_db: Path) -> str:
    return fresh_tracking_uri(_empty_mlflow_db, tmp_path / "mlflow")


def _real_runs(tmp_path: Path, tracking: str, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    """Generated sensor data in a Feast repo, and the operator set to run real training."""
    from loopline.data import features

    frame, manifest = generate(DATA)
    write_dataset(frame, manifest, tmp_path / "data")
    features.create_repo(tmp_path / "repo", tmp_path / "data" / "sensors.parquet", factory_schema())
    features.apply(tmp_path / "repo")
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("LOOPLINE_OPERATOR_FEATURE_REPO", str(tmp_path / "repo"))
    monkeypatch.setenv("LOOPLINE_OPERATOR_WORKER_COMMAND", json.dumps([]))  # the real runner
    return frame


def test_model_trains_for_real_and_serves(
    operator_harness: OperatorHarness,
    tmp_path: Path,
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """...and keeps serving through an operator killed with SIGKILL: the next operator adopts
    the model server, so the endpoint in status stays the same and no request fails."""
    frame = _real_runs(tmp_path, tracking, monkeypatch)
    h = operator_harness
    # The first operator runs as its own process, to be killed; it needs the real runner too.
    h.env.update({k: os.environ[k] for k in REAL_ENV})
    h.create(REAL_PIPELINE)
    h.create(
        model_manifest(
            serving={"replicas": 1},
            validation={"metric": "roc_auc"},
        )
    )
    first = h.start_process()
    status = h.wait_phase("drill-ae", "Serving", timeout=600)
    rest = status["endpoints"]["rest"]
    ready = httpx.get(f"{rest}/v2/models/drill-ae/ready", timeout=10, trust_env=False)
    assert ready.status_code == 200
    assert status["champion"]["version"] == "1"
    assert status["champion"]["metrics"], "the run's metrics reach the status"
    monitor = status["endpoints"]["monitor"]  # the local drift monitor of the champion
    wait_for(lambda: _ok(f"{monitor}/healthz"), timeout=120, what="the drift monitor to answer")
    pid_file = tmp_path / "serving" / h.namespace / "drill-ae" / "server.pid"
    server_pid = pid_file.read_text().strip()
    with _traffic(rest, _body(rest, frame)) as outcomes:
        h.kill(first)
        with h.running():
            # The new operator has reconciled once it runs a monitor of its own.
            status = wait_for(
                lambda: (s := h.status("drill-ae"))["endpoints"].get("monitor") != monitor and s,
                timeout=120,
                what="the new operator to reconcile the Model",
            )
            status = h.wait_phase("drill-ae", "Serving", timeout=120)
            assert status["endpoints"]["rest"] == rest
            assert pid_file.read_text().strip() == server_pid, "adopted, not restarted"
            monitor = status["endpoints"]["monitor"]
            wait_for(lambda: _ok(f"{monitor}/healthz"), timeout=120, what="the new monitor")
            # Requests after the new operator's reconcile too, not only before it.
            after = len(outcomes)
            wait_for(
                lambda: len(outcomes) >= after + 10,
                timeout=30,
                what="10 more requests after the reconcile",
            )
            answered = list(outcomes)
            assert answered.count(200) > 20, answered[-5:]
            assert set(answered) == {200}, [o for o in answered if o != 200][:5]
            h.custom.delete_namespaced_custom_object(
                "loopline.dev", "v1alpha1", h.namespace, "models", "drill-ae"
            )
            wait_for(lambda: h.get("drill-ae") is None, timeout=60, what="the Model to go")
    # Its registry entry keeps version 1 as history, without the aliases.
    registry = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registered = f"{h.namespace}.drill-ae"
    assert registry.get_registered_model(registered).aliases == {}
    assert str(registry.get_model_version(registered, "1").version) == "1"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{rest}/v2/health/live", timeout=2, trust_env=False)
    assert not _ok(f"{monitor}/healthz")


REAL_ENV = (
    "LOOPLINE_MLFLOW_TRACKING_URI",
    "LOOPLINE_OPERATOR_FEATURE_REPO",
    "LOOPLINE_OPERATOR_WORKER_COMMAND",
)


def _body(rest: str, frame: pd.DataFrame, rows: int = 8) -> dict[str, object]:
    """A per-feature V2 request built from the served model's own metadata."""
    metadata = httpx.get(f"{rest}/v2/models/drill-ae", timeout=10, trust_env=False).json()
    names = [
        i["name"]
        for i in metadata["inputs"]
        if i["name"] in frame.columns and i["datatype"] == "FP32"
    ]
    x = frame[names].to_numpy(dtype="float32")[:rows]
    return {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [len(x)], "data": x[:, j].tolist()}
            for j, n in enumerate(names)
        ]
    }


@contextmanager
def _traffic(rest: str, body: dict[str, object]) -> Iterator[list[int | str]]:
    """A client calling the endpoint every 20 ms in the background; yields the outcomes so
    far (status codes, or the error of a request that got no answer)."""
    outcomes: list[int | str] = []
    stop = threading.Event()

    def call() -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not stop.wait(0.02):
                try:
                    response = client.post(f"{rest}/v2/models/drill-ae/infer", json=body)
                    outcomes.append(response.status_code)
                except httpx.HTTPError as exc:
                    outcomes.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join(timeout=15)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_canary_over_its_budget_is_rolled_back_and_never_becomes_champion(
    operator_harness: OperatorHarness,
    tmp_path: Path,
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Version 2 passes the gate and takes half the traffic; live requests put its p95
    latency over a budget no server meets (0.1 ms, under the histogram's first bucket), so
    the operator rolls it back: version 1 keeps serving all traffic and stays the registry's
    `champion`, which the drift monitor and the next gate read."""
    frame = _real_runs(tmp_path, tracking, monkeypatch)
    h = operator_harness
    h.create(REAL_PIPELINE)
    canary = {
        "steps": [50, 100],
        "stepSeconds": 3600,  # only the abort metric can end this canary
        "abortMetric": "latency_p95_seconds",
        "abortThreshold": 0.0001,
    }
    h.create(
        model_manifest(serving={"replicas": 1, "canary": canary}, validation={"metric": "roc_auc"})
    )
    registry = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registered = f"{h.namespace}.drill-ae"
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=600)
        rest = status["endpoints"]["rest"]
        assert str(registry.get_model_version_by_alias(registered, "champion").version) == "1"
        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN: "retrain-2"}}})

        def rolling_out() -> bool:
            s = h.status("drill-ae")
            runs = s.get("runs") or []
            if runs and runs[0].get("modelVersion") == "2" and runs[0].get("gatePassed") is False:
                raise AssertionError(f"the gate rejected version 2: {runs[0].get('message')}")
            return (s.get("rollout") or {}).get("version") == "2"

        wait_for(rolling_out, timeout=600, what="version 2 to start its canary")
        # The gate passed, yet the registry's champion is still what serves all traffic.
        assert str(registry.get_model_version_by_alias(registered, "champion").version) == "1"
        body = _body(rest, frame)
        answered: set[str] = set()

        def aborted() -> bool:
            for _ in range(20):
                response = httpx.post(
                    f"{rest}/v2/models/drill-ae/infer", json=body, timeout=10, trust_env=False
                )
                assert response.status_code == 200, response.text
                answered.add(response.json()["model_version"])
            return "CanaryAborted" in [reason for reason, _ in h.events("drill-ae")]

        wait_for(aborted, timeout=180, what="the canary to be rolled back")
        status = wait_for(
            lambda: (s := h.status("drill-ae")).get("rollout") is None and s,
            timeout=30,
            what="the rollout to end",
        )
    assert answered == {"1", "2"}, "both versions answered during the canary"
    assert status["champion"]["version"] == "1"
    assert str(registry.get_model_version_by_alias(registered, "champion").version) == "1"
    message = next(m for reason, m in h.events("drill-ae") if reason == "CanaryAborted")
    assert "latency_p95_seconds" in message
    # Recorded where it outlives the Event: the run's status and the version's tags.
    result = status["runs"][0]["rolloutResult"]
    assert (status["runs"][0]["modelVersion"], result["outcome"]) == ("2", "RolledBack")
    assert result["weight"] == 50
    assert "latency_p95_seconds" in result["message"]
    tags = registry.get_model_version(registered, "2").tags
    assert tags["loopline.gate.decision"] == "passed"
    assert tags["loopline.rollout.outcome"] == "rolled_back"
    assert tags["loopline.rollout.reason"] == result["message"]
    assert registry.get_model_version(registered, "1").tags["loopline.rollout.outcome"] == (
        "promoted"
    )
