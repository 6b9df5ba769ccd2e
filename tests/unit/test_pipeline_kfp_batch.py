"""A batch-scoring run through the `kfp` backend, against the stub KFP API server.

The stub (tests/fixtures/kfp_api.py) stands in for a KFP API server, which cannot be built
here: routes, request checks and answers come from the `kfp-server-api` package, strictly.
kfp.Client, our code, and MLflow (SQLite, where the outcome is read from) are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml
from kfp_server_api import models

from loopline.pipelines.compile import COMPILED_DIR
from loopline.pipelines.kfp_backend import make_client, run_status, submit
from loopline.tracking.experiments import client_for, ensure_experiment
from loopline.tracking.lineage import DATA_ROWS, RUN_ID
from loopline.tracking.outcome import BATCH_OUTPUT, MODEL_VERSION
from loopline.types.batch import BatchRunSpec, parse_run_spec
from loopline.types.runs import RunPhase
from tests.fixtures.kfp_api import KfpStub, running_stub

State = models.V2beta1RuntimeState


def _spec(tracking_uri: str = "http://mlflow.invalid") -> BatchRunSpec:
    return BatchRunSpec(
        run_id="drill-ae-batch-202603020200-0a1b2c",
        namespace="plant",
        model_name="drill-ae",
        registered_model_name="plant.drill-ae",
        window_start=datetime(2026, 3, 1, 2, tzinfo=UTC),
        window_end=datetime(2026, 3, 2, 2, tzinfo=UTC),
        scheduled_time=datetime(2026, 3, 2, 2, tzinfo=UTC),
        mlflow_tracking_uri=tracking_uri,
        feature_repo="/feature_repo",
    )


@pytest.fixture
def stub() -> Iterator[KfpStub]:
    with running_stub() as server:
        yield server


def test_submit_sends_the_batch_golden_package_once_per_run_id(stub: KfpStub) -> None:
    client = make_client(stub.url)
    spec = _spec()
    kfp_run = submit(client, spec)
    assert submit(client, spec) == kfp_run
    assert len(stub.runs) == 1
    (created,) = stub.called("run_service_create_run")
    posted = created.body
    assert isinstance(posted, models.V2beta1Run)
    assert posted.display_name == spec.run_id
    assert parse_run_spec(posted.runtime_config.parameters["spec_json"]) == spec
    assert posted.pipeline_spec["pipelineInfo"]["name"] == "loopline-batch-scoring"
    with (COMPILED_DIR / "batch-scoring.yaml").open() as fh:
        golden = next(yaml.safe_load_all(fh))
    assert posted.pipeline_spec["root"] == golden["root"]
    assert set(posted.pipeline_spec["root"]["dag"]["tasks"]) == {"score-window"}


def test_a_finished_batch_run_reads_its_outcome_from_mlflow(
    stub: KfpStub, training_mlflow_uri: str
) -> None:
    spec = _spec(training_mlflow_uri)
    client = make_client(stub.url)
    kfp_run = submit(client, spec)
    running = run_status(client, spec, kfp_run)
    assert running.phase == RunPhase.PENDING
    assert running.model_version is None
    # What the score-window step records (loopline.batch.job, tagged with the run id).
    mlflow = client_for(training_mlflow_uri)
    experiment = ensure_experiment(mlflow, "plant", "drill-ae")
    recorded = mlflow.create_run(
        experiment,
        tags={
            RUN_ID: spec.run_id,
            MODEL_VERSION: "3",
            DATA_ROWS: "1440",
            BATCH_OUTPUT: "/feature_repo/data/scores/x.parquet",
        },
    )
    mlflow.log_metric(recorded.info.run_id, "batch_rows", 1440.0)
    stub.update_run(kfp_run, state=State.SUCCEEDED, finished_at=datetime(2026, 3, 2, 3, tzinfo=UTC))
    done = run_status(client, spec, kfp_run)
    assert done.phase == RunPhase.SUCCEEDED
    assert done.model_version == "3"
    assert done.mlflow_run_id == recorded.info.run_id
    assert done.metrics == {"batch_rows": 1440.0}
    assert done.message == "scored 1440 rows -> /feature_repo/data/scores/x.parquet"
    assert not done.gate_passed


def test_a_failed_batch_run_names_its_step(stub: KfpStub) -> None:
    spec = _spec()
    client = make_client(stub.url)
    kfp_run = submit(client, spec)
    stub.update_run(
        kfp_run,
        state=State.FAILED,
        run_details=models.V2beta1RunDetails(
            task_details=[
                models.V2beta1PipelineTaskDetail(
                    display_name="score-window",
                    state=State.FAILED,
                    error=models.GoogleRpcStatus(code=9, message="--version: no champion yet"),
                )
            ]
        ),
    )
    failed = run_status(client, spec, kfp_run, with_outcome=False)
    assert (failed.phase, failed.step) == (RunPhase.FAILED, "score-window")
    assert failed.message == "--version: no champion yet"
