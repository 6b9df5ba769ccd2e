from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopline.types.common import Task, Trigger, registered_model_name
from loopline.types.policy import TrainingParams, ValidationPolicy
from loopline.types.runs import TrainingRunSpec


def _spec(**extra: object) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "runId": "r-1",
            "namespace": "plant",
            "modelName": "drill-ae",
            "task": "anomaly-detection",
            "trigger": "drift",
            "featureService": "all_sensors",
            "registeredModelName": registered_model_name("plant", "drill-ae"),
            "mlflowTrackingUri": "sqlite:///x.db",
            "featureRepo": "feature_repo",
            **extra,
        }
    )


def test_spec_round_trips_through_json_with_camel_case() -> None:
    spec = _spec(params={"epochs": 5, "hiddenUnits": [8]})
    wire = spec.model_dump_json(by_alias=True)
    assert '"hiddenUnits":[8]' in wire
    again = TrainingRunSpec.model_validate_json(wire)
    assert again == spec
    assert again.task is Task.ANOMALY_DETECTION
    assert again.trigger is Trigger.DRIFT
    assert again.registered_model_name == "plant.drill-ae"


def test_unknown_field_is_rejected_with_its_name() -> None:
    with pytest.raises(ValidationError, match="epochz"):
        TrainingParams.model_validate({"epochz": 3})


def test_policy_metric_is_an_enumerated_name() -> None:
    with pytest.raises(ValidationError, match="metric"):
        ValidationPolicy.model_validate({"metric": "loss"})
