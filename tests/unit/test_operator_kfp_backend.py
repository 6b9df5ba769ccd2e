"""The kfp pipeline backend's failure handling, against a loopback port nobody listens on
(a real refused connection: no KFP server is needed to see that it is temporary)."""

from __future__ import annotations

import socket

import pytest

from loopline.operators.backends.kfp import KfpPipelineBackend
from loopline.operators.errors import BackendUnavailable
from loopline.operators.settings import OperatorSettings
from loopline.types.runs import TrainingRunSpec


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
