"""The Model and Pipeline pydantic types: defaults, aliases, cross-field rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.status import ModelStatus


def _model(**extra: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"task": "anomaly-detection", "pipelineRef": {"name": "training"}, **extra}
    )


def test_minimal_model_gets_defaults() -> None:
    spec = _model()
    assert spec.serving.canary.steps == [10, 50, 100]
    assert spec.monitoring.detector == "ks"
    assert spec.training is None


def test_training_overrides_remember_what_was_set() -> None:
    spec = _model(training={"epochs": 3})
    assert spec.training is not None
    assert spec.training.model_dump(exclude_unset=True) == {"epochs": 3}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([50, 10, 100], "strictly increasing"),
        ([10, 10, 100], "strictly increasing"),
        ([10, 50], "end at 100"),
        ([0, 100], "greater than or equal to 1"),
    ],
)
def test_bad_canary_steps_are_rejected(steps: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _model(serving={"canary": {"steps": steps}})


def test_retrain_on_drift_needs_monitoring_enabled() -> None:
    with pytest.raises(ValidationError, match=r"retrainOnDrift needs monitoring\.enabled"):
        _model(monitoring={"enabled": False, "retrainOnDrift": True})


def test_missing_pipeline_ref_names_the_field() -> None:
    with pytest.raises(ValidationError, match="pipelineRef"):
        ModelSpec.model_validate({"task": "classification"})


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="replica"):
        _model(serving={"replica": 2})


def test_pipeline_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        PipelineSpec.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        PipelineSpec.model_validate({"pipeline": "training", "packageUri": "training"})
    assert PipelineSpec.model_validate({"pipeline": "training"}).concurrency_policy == "Forbid"


def test_empty_status_parses() -> None:
    assert ModelStatus.model_validate({}).phase == "Pending"
