"""The `kfp` backend's submit/status functions against a stub KFP API server.

The stub (tests/fixtures/kfp_api.py) stands in for a KFP API server, which cannot be built
here; it serves the v2beta1 operations kfp.Client calls, with routes, request checks and
answers taken from the `kfp-server-api` package (strict: a request or an answer its models
reject fails the test). Everything above the HTTP boundary (kfp.Client, its generated API
client, our code) is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import yaml
from kfp_server_api import models

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
from tests.fixtures.kfp_api import KfpStub, ShapeError, check, running_stub

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
State = models.V2beta1RuntimeState


@pytest.fixture
def stub() -> Iterator[KfpStub]:
    with running_stub() as server:
        yield server


def test_submit_sends_the_golden_package_with_run_name_and_spec(stub: KfpStub) -> None:
    client = make_client(stub.url)
    run_id = submit(client, SPEC)
    assert list(stub.runs) == [run_id]
    (experiment,) = stub.experiments.values()
    assert experiment.display_name == experiment_name(SPEC)
    (created,) = stub.called("run_service_create_run")
    posted = created.body
    assert isinstance(posted, models.V2beta1Run)  # the package's model, parsed strictly
    assert posted.display_name == SPEC.run_id
    assert posted.experiment_id == experiment.experiment_id
    assert (
        TrainingRunSpec.model_validate_json(posted.runtime_config.parameters["spec_json"]) == SPEC
    )
    assert posted.pipeline_spec["pipelineInfo"]["name"] == "loopline-training"
    with (COMPILED_DIR / "training.yaml").open() as fh:
        golden = next(yaml.safe_load_all(fh))
    assert posted.pipeline_spec["root"] == golden["root"]


def test_submit_is_idempotent_per_run_id(stub: KfpStub) -> None:
    client = make_client(stub.url)
    assert submit(client, SPEC) == submit(client, SPEC)
    assert len(stub.runs) == 1
    assert len(stub.experiments) == 1
    listed = stub.called("run_service_list_runs")
    assert listed
    assert all(r.query["experiment_id"] in stub.experiments for r in listed)


def test_status_maps_states_and_names_the_failed_step(stub: KfpStub) -> None:
    client = make_client(stub.url)
    run_id = submit(client, SPEC)
    assert run_status(client, SPEC, run_id, with_outcome=False).phase == RunPhase.PENDING
    stub.update_run(
        run_id,
        state=State.RUNNING,
        run_details=models.V2beta1RunDetails(
            task_details=[
                models.V2beta1PipelineTaskDetail(display_name="load-features", state="SUCCEEDED"),
                models.V2beta1PipelineTaskDetail(display_name="validate-data", state="RUNNING"),
            ]
        ),
    )
    running = run_status(client, SPEC, run_id, with_outcome=False)
    assert (running.phase, running.step) == (RunPhase.RUNNING, "validate-data")
    stub.update_run(
        run_id,
        state=State.FAILED,
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        run_details=models.V2beta1RunDetails(
            task_details=[
                models.V2beta1PipelineTaskDetail(
                    display_name="validate-data",
                    state=State.FAILED,
                    error=models.GoogleRpcStatus(code=9, message="completeness 0.91 < 0.95"),
                )
            ]
        ),
    )
    failed = run_status(client, SPEC, run_id, with_outcome=False)
    assert failed.phase == RunPhase.FAILED
    assert failed.step == "validate-data"
    assert failed.message == "completeness 0.91 < 0.95"
    assert failed.finished_at == datetime(2026, 1, 1, tzinfo=UTC)


# Every state of the package's RuntimeState enum, and the phase the backend gives it: in flight
# (PENDING, RUNNING) or done (SUCCEEDED, FAILED, CANCELLED).
EXPECTED_PHASES = {
    State.RUNTIME_STATE_UNSPECIFIED: RunPhase.PENDING,
    State.PENDING: RunPhase.PENDING,
    State.RUNNING: RunPhase.RUNNING,
    State.PAUSED: RunPhase.RUNNING,
    State.CANCELING: RunPhase.RUNNING,
    State.SUCCEEDED: RunPhase.SUCCEEDED,
    State.SKIPPED: RunPhase.SUCCEEDED,
    State.FAILED: RunPhase.FAILED,
    State.CANCELED: RunPhase.CANCELLED,
}


def test_every_state_of_the_packages_enum_has_a_phase() -> None:
    """A state the package adds fails here until the backend decides what it means."""
    assert set(EXPECTED_PHASES) == set(State.allowable_values)
    for state, phase in EXPECTED_PHASES.items():
        assert run_phase(state) == phase, state
    assert run_phase(None) == RunPhase.PENDING
    assert run_phase("SOMETHING_NEWER") == RunPhase.RUNNING  # never taken for done


@pytest.mark.parametrize("state", sorted(State.allowable_values))
def test_a_runs_state_read_over_http_maps_as_the_backend_expects(stub: KfpStub, state: str) -> None:
    client = make_client(stub.url)
    run_id = submit(client, SPEC)
    stub.update_run(run_id, state=state)
    assert run_status(client, SPEC, run_id, with_outcome=False).phase == EXPECTED_PHASES[state]


def test_the_shape_check_refuses_what_the_package_rejects() -> None:
    check({"display_name": "e", "namespace": "kubeflow"}, "V2beta1Experiment")
    bad = [
        ({"display_name": "e", "displayName": "e"}, "V2beta1Experiment", "no field"),
        ({"description": "no name"}, "V2beta1Experiment", "missing required"),
        ({"display_name": 5}, "V2beta1Experiment", "expected str"),
        ({"display_name": "r", "state": "DONE"}, "V2beta1Run", "is not a V2beta1RuntimeState"),
        ({"display_name": "r", "created_at": "yesterday"}, "V2beta1Run", "expected datetime"),
        ({"runs": {"display_name": "r"}}, "V2beta1ListRunsResponse", "expected a list"),
        (
            {"display_name": "r", "runtime_config": {"parameters": [], "extra": 1}},
            "V2beta1Run",
            "no field",
        ),
    ]
    for data, kind, needle in bad:
        with pytest.raises(ShapeError, match=needle):
            check(data, kind)


def test_the_stub_refuses_to_answer_a_run_the_package_would_reject() -> None:
    """An answer the stub builds wrong never reaches the client: it is a 500 and a problem."""
    with running_stub(allow_problems=True) as stub:
        client = make_client(stub.url)
        run_id = submit(client, SPEC)
        stub.update_run(run_id, state="DONE")  # not a RuntimeState: the setter does not check
        with pytest.raises(Exception, match="500"):
            client.get_run(run_id)
        assert any("is not a V2beta1RuntimeState" in p for p in stub.problems)


def test_the_stub_refuses_requests_the_package_would_reject() -> None:
    with running_stub(allow_problems=True) as stub:
        base = f"{stub.url}/apis/v2beta1"
        bogus = httpx.post(f"{base}/experiments", json={"display_name": "e", "colour": "red"})
        assert bogus.status_code == 400
        assert bogus.json()["message"].endswith("V2beta1Experiment has no field(s) ['colour']")
        nameless = httpx.post(f"{base}/experiments", json={"namespace": "kubeflow"})
        assert nameless.status_code == 400
        assert "missing required field(s) ['display_name']" in nameless.json()["message"]
        bad_query = httpx.get(f"{base}/runs", params={"page_size": "ten"})
        assert bad_query.status_code == 400
        unknown_query = httpx.get(f"{base}/runs", params={"experiment": "x"})
        assert unknown_query.status_code == 400
        flt = {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringVal": "x"}]}
        bad_filter = httpx.get(f"{base}/runs", params={"filter": json.dumps(flt)})
        assert bad_filter.status_code == 400
        assert httpx.delete(f"{base}/runs/x").status_code == 404  # not an operation we use
        assert len(stub.problems) == 6
        assert stub.experiments == {}
