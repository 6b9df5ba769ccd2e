"""Scheduled batch scoring through the operator on the local pipeline backend, against the
real local control plane: a Model with `spec.batch` gets exactly one batch run for its slot,
scored for real by `python -m loopline.pipelines.run` (the batch-scoring pipeline under
kfp.local) with a real registered version in a real MLflow, its scores readable through the
feature repository.

Training is the operator test worker's (tests/fixtures/operator.py: it registers a version
without artifacts), so the batch spec pins the real version the test registered first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from loopline.batch.job import BATCH, BATCH_CALLER, MODEL_VERSION
from loopline.data import features
from loopline.data.schema import factory_schema
from loopline.operators.builders.batch import batch_run_id
from loopline.tracking.experiments import client_for, experiment_name, find_run
from tests.fixtures.cluster import wait_for
from tests.fixtures.data import GeneratedData
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest
from tests.fixtures.training import TrainAndRegister

pytestmark = pytest.mark.integration


def _next_slot(now: datetime) -> datetime:
    """A minute far enough ahead that the Model exists before it."""
    slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return slot if slot - now >= timedelta(seconds=20) else slot + timedelta(minutes=1)


def test_a_scheduled_slot_gets_one_batch_run_readable_through_feast(
    operator_harness: OperatorHarness,
    train_and_register: TrainAndRegister,
    training_mlflow_uri: str,
    sensor_data: GeneratedData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = operator_harness
    trained = train_and_register(model="drill-ae", namespace=h.namespace)
    repo = tmp_path / "repo"
    features.create_repo(repo, sensor_data.parquet, factory_schema())
    features.apply(repo)
    for key, value in (
        ("LOOPLINE_MLFLOW_TRACKING_URI", training_mlflow_uri),
        ("LOOPLINE_OPERATOR_FEATURE_REPO", str(repo)),
    ):
        monkeypatch.setenv(key, value)
        h.env[key] = value
    schema = factory_schema()
    first = sensor_data.frame[schema.timestamp].min().to_pydatetime()
    slot = _next_slot(datetime.now(UTC))
    days = (slot - first).days + 1  # a window that reaches back over all the data
    h.create(PIPELINE)
    h.create(
        model_manifest(
            batch={
                "schedule": f"{slot.minute} {slot.hour} * * *",
                "window": f"{days}d",
                "version": trained.version,
            }
        )
    )
    with h.running():
        status = wait_for(
            lambda: (s := h.status("drill-ae").get("batch") or {}).get("lastRun") and s,
            timeout=300,
            what="the scheduled batch run to finish",
        )
        assert status["lastRun"]["phase"] == "Succeeded", status["lastRun"]
        # The operator goes on reconciling every second: no second run for the slot.
        h.wait_phase("drill-ae", "Serving", timeout=60)
    with h.running():  # a restarted operator neither
        wait_for(
            lambda: (
                h.status("drill-ae")["batch"]
                .get("nextScheduleTime", "")
                .startswith((slot + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
            ),
            timeout=30,
            what="the restarted operator to reconcile the schedule",
        )
    obj = h.get("drill-ae")
    assert obj is not None
    run_id = batch_run_id("drill-ae", obj["metadata"]["uid"], slot)
    batch_runs = [r for r in h.started() if "-batch-" in r]
    assert batch_runs == [run_id]
    status = obj["status"]["batch"]
    assert status["lastScheduleTime"].startswith(slot.strftime("%Y-%m-%dT%H:%M"))
    assert status.get("currentRun") is None
    succeeded = status["lastSucceeded"]
    assert succeeded["runId"] == run_id
    assert succeeded["modelVersion"] == trained.version
    assert succeeded["rows"] == len(sensor_data.frame)
    # Counted for model usage once, in the status write that ended it, through a restart.
    (usage,) = status["usage"]
    assert {k: usage[k] for k in ("version", "outcome", "runs", "rows")} == {
        "version": trained.version,
        "outcome": "ok",
        "runs": 1,
        "rows": len(sensor_data.frame),
    }
    assert 0 <= usage["fallbackRows"] <= usage["rows"]
    reasons = [reason for reason, _ in h.events("drill-ae")]
    assert reasons.count("BatchRunStarted") == 1
    assert reasons.count("BatchRunSucceeded") == 1

    # Recorded in MLflow, found by the Loopline run id.
    client = client_for(training_mlflow_uri)
    experiment = client.get_experiment_by_name(experiment_name(h.namespace, "drill-ae"))
    assert experiment is not None
    run = find_run(client, str(experiment.experiment_id), run_id)
    assert run is not None
    assert str(run.info.run_id) == succeeded["mlflowRunId"]
    assert run.data.tags[BATCH] == "true"
    assert run.data.tags[MODEL_VERSION] == trained.version
    assert run.data.tags[BATCH_CALLER] == "schedule"  # left to the operator's usage series
    assert run.info.status == "FINISHED"

    # Readable through the feature repository.
    view = f"scores_{h.namespace.replace('-', '_')}_drill_ae"
    spine = sensor_data.frame[[schema.entity, schema.timestamp]].tail(20).reset_index(drop=True)
    read = (
        features.open_store(repo)
        .get_historical_features(entity_df=spine, features=[f"{view}:anomaly_score"])
        .to_df()
    )
    assert len(read) == 20
    assert pd.notna(read["anomaly_score"]).all()
