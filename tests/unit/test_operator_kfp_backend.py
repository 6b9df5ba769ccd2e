"""The kfp pipeline backend: its failure handling against a loopback port nobody listens on
(a real refused connection: no KFP server is needed to see that it is temporary), and its
runs against the stub KFP API server."""

from __future__ import annotations

import socket

import pytest
from kfp_server_api import models

from loopline.operators.backends.kfp import KfpPipelineBackend
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.settings import OperatorSettings
from loopline.types.runs import RunPhase, TrainingRunSpec
from tests.fixtures.kfp_api import running_stub


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spec() -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "runId": "drill-ae-1",
            "namespace": "plant",
            "modelName": "drill-ae",
            "task": "anomaly-detection",
            "trigger": "manual",
            "featureService": "all_sensors",
            "registeredModelName": "plant.drill-ae",
            "mlflowTrackingUri": "sqlite:///x.db",
            "featureRepo": "feature_repo",
        }
    )


def test_needs_a_host() -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_KFP_HOST"):
        KfpPipelineBackend(OperatorSettings())


def test_unreachable_server_is_temporary_and_unknown_runs_are_none() -> None:
    backend = KfpPipelineBackend(OperatorSettings(kfp_host=f"http://127.0.0.1:{_closed_port()}"))
    assert backend.status("never-submitted") is None  # the builder then submits (adopts)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        backend.submit(_spec())
    assert backend.runs_of("plant", "drill-ae") == []


def test_submit_status_cancel_and_adoption_through_the_kfp_api() -> None:
    """Against the stub KFP API server (tests/fixtures/kfp_api.py: routes, request checks
    and answers from the kfp-server-api package), which stands in for a KFP API server."""
    with running_stub() as stub:
        backend = KfpPipelineBackend(OperatorSettings(kfp_host=stub.url))
        spec = _spec()
        assert backend.submit(spec) == spec.run_id
        (kfp_run_id,) = stub.runs
        status = backend.status(spec.run_id)
        assert status is not None
        assert status.phase == RunPhase.PENDING
        assert backend.runs_of("plant", "drill-ae") == [spec.run_id]

        restarted = KfpPipelineBackend(OperatorSettings(kfp_host=stub.url))
        assert restarted.status(spec.run_id) is None  # the builder then submits it again
        assert restarted.submit(spec) == spec.run_id
        assert list(stub.runs) == [kfp_run_id]  # adopted, not started twice

        restarted.cancel(spec.run_id)
        (terminated,) = stub.called("run_service_terminate_run")
        assert terminated.path_params == {"run_id": kfp_run_id}
        canceling = restarted.status(spec.run_id)
        assert canceling is not None
        assert canceling.phase == RunPhase.RUNNING  # CANCELING: still in flight
        stub.update_run(kfp_run_id, state=models.V2beta1RuntimeState.CANCELED)
        cancelled = restarted.status(spec.run_id)
        assert cancelled is not None
        assert cancelled.phase == RunPhase.CANCELLED


def test_a_run_the_server_no_longer_knows_is_rejected_not_retried() -> None:
    with running_stub() as stub:
        backend = KfpPipelineBackend(OperatorSettings(kfp_host=stub.url))
        spec = _spec()
        backend.submit(spec)
        stub.runs.clear()  # deleted on the KFP side
        with pytest.raises(BackendRejected, match="404"):
            backend.status(spec.run_id)
