"""`spec.alarms`: validated by pydantic and the CRD alike, carried into every training run,
and changing a run's inputs only when a Model sets it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from loopline.operators.builders.runs import (
    RunContext,
    build_run_spec,
    training_hash,
    training_inputs,
)
from loopline.types import crd_schema
from loopline.types.alarms import CLEAR_MESSAGE, RAISE_MESSAGE, AlarmPolicy
from loopline.types.common import Trigger
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec

PIPE = PipelineSpec.model_validate({"pipeline": "training"})
CTX = RunContext(mlflow_tracking_uri="sqlite:///m.db", feature_repo="feature_repo")


def _model(**spec: Any) -> ModelSpec:
    body = {"task": "anomaly-detection", "pipelineRef": {"name": "training"}} | spec
    return ModelSpec.model_validate(body)


def test_defaults_and_a_budget() -> None:
    default = AlarmPolicy()
    assert (default.max_false_alarm_rate, default.k, default.n, default.m) == (None, 5, 8, 1)
    assert default.model_dump(by_alias=True) == {
        "maxFalseAlarmRate": None,
        "window": 8,
        "raiseAt": 5,
        "clearBelow": 1,
    }
    model = _model(alarms={"maxFalseAlarmRate": 0.01, "raiseAt": 2, "window": 4})
    assert model.alarms == AlarmPolicy(max_false_alarm_rate=0.01, raise_at=2, window=4)
    assert _model().alarms is None


@pytest.mark.parametrize(
    ("alarms", "message"),
    [
        ({"raiseAt": 9}, RAISE_MESSAGE),  # window defaults to 8
        ({"raiseAt": 2, "clearBelow": 3}, CLEAR_MESSAGE),
        ({"maxFalseAlarmRate": 0}, "greater than 0"),
        ({"maxFalseAlarmRate": 0.6}, "less than or equal to 0.5"),
        ({"window": 101}, "less than or equal to 100"),
        ({"n": 5}, "Extra inputs are not permitted"),
    ],
)
def test_impossible_settings_are_refused(alarms: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _model(alarms=alarms)


def test_the_crd_carries_the_same_rules_and_ranges() -> None:
    spec = crd_schema.model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    alarms = spec["properties"]["spec"]["properties"]["alarms"]
    rules = {r["rule"]: r["message"] for r in alarms["x-kubernetes-validations"]}
    assert rules == {
        "self.raiseAt <= self.window": RAISE_MESSAGE,
        "self.clearBelow <= self.raiseAt": CLEAR_MESSAGE,
    }
    budget = alarms["properties"]["maxFalseAlarmRate"]
    assert (budget["minimum"], budget["exclusiveMinimum"], budget["maximum"]) == (0, True, 0.5)
    assert [alarms["properties"][f]["default"] for f in ("raiseAt", "window", "clearBelow")] == [
        5,
        8,
        1,
    ]
    assert "default" not in alarms  # unset stays unset: the run hash of such a Model holds


def test_runs_carry_the_policy_and_only_a_set_policy_changes_the_hash() -> None:
    plain, budget = _model(), _model(alarms={"maxFalseAlarmRate": 0.01})
    assert "alarms" not in training_inputs(PIPE, plain)
    assert training_inputs(PIPE, budget)["alarms"]["maxFalseAlarmRate"] == 0.01
    assert training_hash(PIPE, plain) != training_hash(PIPE, budget)

    def run(model: ModelSpec) -> AlarmPolicy:
        spec = build_run_spec(
            run_id_="r1",
            namespace="plant",
            name="drill-ae",
            trigger=Trigger.MANUAL,
            model=model,
            pipeline=PIPE,
            context=CTX,
            parent_version=None,
            drift_start=datetime(2026, 1, 1, tzinfo=UTC),
        )
        again = type(spec).model_validate_json(spec.model_dump_json(by_alias=True))
        assert again.alarms == spec.alarms  # survives the pipeline's one JSON parameter
        return spec.alarms

    assert run(plain) == AlarmPolicy()
    assert run(budget).max_false_alarm_rate == 0.01
