"""The whole vertical slice with the real backends: no test worker, no replicas: 0.

A Model is applied; the operator runs `python -m loopline.pipelines.run` through the local
pipeline backend (Feast over generated data, the quality gate, torch, MLflow in SQLite) and
serves the registered version with a local model server process through the local serving
backend, with a local drift monitor process beside it; the test then asks the endpoint in status for readiness over the Open Inference
Protocol. Then the Model is deleted and the server process must be gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.schema import factory_schema
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest
from tests.fixtures.training import fresh_tracking_uri

pytestmark = pytest.mark.slow

DATA = GeneratorConfig(machines=2, days=6, interval_seconds=300, seed=3, fault_fraction=0.08)


@pytest.fixture
def tracking(tmp_path: Path, _empty_mlflow_db: Path) -> str:
    return fresh_tracking_uri(_empty_mlflow_db, tmp_path / "mlflow")


def test_model_trains_for_real_and_serves(
    operator_harness: OperatorHarness,
    tmp_path: Path,
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loopline.data import features

    frame, manifest = generate(DATA)
    write_dataset(frame, manifest, tmp_path / "data")
    features.create_repo(tmp_path / "repo", tmp_path / "data" / "sensors.parquet", factory_schema())
    features.apply(tmp_path / "repo")
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("LOOPLINE_OPERATOR_FEATURE_REPO", str(tmp_path / "repo"))
    monkeypatch.setenv("LOOPLINE_OPERATOR_WORKER_COMMAND", json.dumps([]))  # the real runner

    h = operator_harness
    h.create(
        PIPELINE
        | {"spec": {"pipeline": "training", "parameters": {"epochs": 5, "trainingWindowDays": 30}}}
    )
    h.create(
        model_manifest(
            serving={"replicas": 1},
            validation={"metric": "roc_auc"},
        )
    )
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=600)
        rest = status["endpoints"]["rest"]
        ready = httpx.get(f"{rest}/v2/models/drill-ae/ready", timeout=10, trust_env=False)
        assert ready.status_code == 200
        assert status["champion"]["version"] == "1"
        assert status["champion"]["metrics"], "the run's metrics reach the status"
        monitor = status["endpoints"]["monitor"]  # the local drift monitor of the champion
        wait_for(lambda: _ok(f"{monitor}/healthz"), timeout=120, what="the drift monitor to answer")
        h.custom.delete_namespaced_custom_object(
            "loopline.dev", "v1alpha1", h.namespace, "models", "drill-ae"
        )
        wait_for(lambda: h.get("drill-ae") is None, timeout=60, what="the Model to go")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{rest}/v2/health/live", timeout=2, trust_env=False)
    assert not _ok(f"{monitor}/healthz")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
