"""The pydantic side of admission: every value the API server refuses, the operator's parse of
the same spec refuses too, with the same message (tests/security/test_admission.py tries the
same values against the real API server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from loopline.types.common import Task
from loopline.types.model import IMMUTABLE_MESSAGES, ModelSpec, immutable_changes
from loopline.types.pipeline import (
    CRON_ORDER_MESSAGE,
    CRON_PATTERN,
    PIPELINE_NAMES,
    PipelineSpec,
    schedule_problem,
)
from loopline.types.policy import (
    ANOMALY_MINIMUM_METRICS,
    ANOMALY_REPORTED_ONLY,
    CLASSIFICATION_MINIMUM_METRICS,
    MAX_MINIMUMS,
    WINDOW_REPORTED_ONLY,
    comparable_metrics,
    minimum_metrics,
)


def _model(**spec: Any) -> ModelSpec:
    body = {"task": "anomaly-detection", "pipelineRef": {"name": "training"}} | spec
    return ModelSpec.model_validate(body)


def _pipeline(**spec: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"pipeline": "training"} | spec)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"training": {"hiddenUnits": [-5, 0]}}, "greater than or equal to 1"),
        ({"training": {"hiddenUnits": [10_000]}}, "less than or equal to 4096"),
        ({"training": {"detector": "lstm"}}, "'dense' or 'window'"),
        ({"training": {"windowSize": 1}}, "greater than or equal to 2"),
        ({"validation": {"minimums": {"f1": 5}}}, "less than or equal to 1"),
        ({"validation": {"minimums": {"f1": -0.5}}}, "minimum must lie in 0..1"),
        (
            {"validation": {"minimums": {"no_such_metric": 0.5}}},
            "not anomaly-detection: no_such_metric",
        ),
        (
            {"validation": {"minimums": {f"m{i}": 0.5 for i in range(20_000)}}},
            "at most 16 items",
        ),
        (
            {"validation": {"metric": "macro_f1"}},
            "validation.metric is not reported for an anomaly-detection Model",
        ),
        (
            {"validation": {"minimums": {"accuracy": 0.5}}},
            "names a metric the Model's task does not report.*not anomaly-detection: accuracy",
        ),
        ({"serving": {"canary": {"abortThreshold": 5}}}, "must be at most 1 for a rate"),
        (
            {"serving": {"canary": {"abortMetric": "latency_p95_seconds", "abortThreshold": 0}}},
            "must be above 0",
        ),
        ({"entityKey": "k" * 5000}, "at most 63 characters"),
        ({"entityKey": "machine-id"}, "should match pattern"),
        ({"serving": {"canary": {"steps": []}}}, "at least 1 item"),
    ],
)
def test_invalid_model_values_are_refused(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        _model(**spec)


def test_classifier_metrics_and_abort_metric() -> None:
    spec = _model(
        task="classification",
        validation={"metric": "macro_f1", "minimums": {"macro_f1": 0.5, "accuracy": 0.6}},
    )
    assert spec.validation.metric == "macro_f1"
    with pytest.raises(ValidationError, match="not classification: fallback_f1"):
        _model(task="classification", validation={"minimums": {"fallback_f1": 0.5}})
    with pytest.raises(ValidationError, match="anomaly_rate_delta needs task anomaly-detection"):
        _model(task="classification", serving={"canary": {"abortMetric": "anomaly_rate_delta"}})
    assert _model(serving={"canary": {"abortMetric": "anomaly_rate_delta"}})


def test_gains_over_baseline_may_be_negative() -> None:
    spec = _model(validation={"minimums": {"f1_gain_over_baseline": -0.1, "f1": 0.6}})
    assert spec.validation.minimums["f1_gain_over_baseline"] == -0.1


def test_latency_threshold_is_in_seconds() -> None:
    spec = _model(serving={"canary": {"abortMetric": "latency_p95_seconds", "abortThreshold": 2}})
    assert spec.serving.canary.abort_threshold == 2
    with pytest.raises(ValidationError, match="less than or equal to 3600"):
        _model(serving={"canary": {"abortMetric": "latency_p95_seconds", "abortThreshold": 1e6}})


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"pipeline": "no-such-pipeline"}, "pipeline must be one of the pipelines"),
        (
            {"pipeline": None, "packageUri": "/etc/passwd"},
            "packageUri must name a package compiled into loopline.pipelines",
        ),
        ({"schedule": "61 25 * * *"}, "got 61 25 \\* \\* \\*"),
        ({"schedule": "a b c d e"}, "schedule must be five space-separated cron fields"),
        ({"schedule": "0 3 * *"}, "schedule must be five"),
        ({"schedule": "5-1 * * * *"}, "must not start after it ends"),
        ({"parameters": {"hiddenUnits": [-5, 0]}}, "greater than or equal to 1"),
    ],
)
def test_invalid_pipeline_values_are_refused(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        _pipeline(**spec)


def test_package_uri_names_a_shipped_package() -> None:
    spec = PipelineSpec.model_validate({"packageUri": "training"})
    assert spec.package_uri == "training"


@pytest.mark.parametrize(
    "text",
    [
        "0 3 * * 0",
        "*/5 * * * *",
        "0-59/15 0-23 1-31 1-12 0-7",
        "0,30 8-18/2 1,15 */3 1-5",
        "5/10 * * * *",
        "  00 03 * * 7 ",
        "59 23 31 12 7",
    ],
)
def test_schedules_the_operator_parses_are_accepted(text: str) -> None:
    from loopline.operators.builders.cron import CronSchedule

    assert schedule_problem(text) is None
    CronSchedule.parse(text)  # and the operator's parser agrees


@pytest.mark.parametrize(
    "text",
    [
        "61 25 * * *",
        "a b c d e",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 0 *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "-1 * * * *",
        "1, * * * *",
        "MON * * * *",
    ],
)
def test_schedules_the_operator_refuses_are_refused(text: str) -> None:
    from loopline.operators.builders.cron import CronError, CronSchedule

    assert schedule_problem(text) is not None
    with pytest.raises(CronError):
        CronSchedule.parse(text)


def test_cron_pattern_needs_no_escapes() -> None:
    # The same text is a Python regex, an RE2 regex and a single-quoted CEL string.
    assert "\\" not in CRON_PATTERN
    assert "'" not in CRON_PATTERN
    assert CRON_ORDER_MESSAGE.startswith("schedule:")


def test_pipeline_names_are_the_pipelines_defined() -> None:
    from loopline.pipelines.training import PIPELINES

    assert sorted(PIPELINE_NAMES) == sorted(PIPELINES)


def test_immutable_changes_name_each_field() -> None:
    old = _model()
    assert immutable_changes(old, old) == []
    new = _model(task="classification", pipelineRef={"name": "other"}, entityKey="pump")
    assert immutable_changes(old, new) == list(IMMUTABLE_MESSAGES.values())
    assert "create a new Model" in IMMUTABLE_MESSAGES["task"]
    changed_serving = _model(serving={"replicas": 2})
    assert immutable_changes(old, changed_serving) == []


@pytest.mark.parametrize(
    ("task", "detector"),
    [*((t, "dense") for t in Task), (Task.ANOMALY_DETECTION, "window")],
)
def test_policy_metric_names_are_what_the_evaluation_reports(task: Task, detector: str) -> None:
    """Train a tiny bundle of each task and compare the names its evaluation reports."""
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.training import train_bundle
    from loopline.types.alarms import AlarmPolicy
    from loopline.types.policy import TrainingParams

    df, _ = generate(
        GeneratorConfig(machines=2, days=0.5, interval_seconds=60, seed=1, fault_fraction=0.1)
    )
    # With a false-alarm budget, so that the names only a budget brings are reported too.
    alarms = AlarmPolicy(max_false_alarm_rate=0.05) if task == Task.ANOMALY_DETECTION else None
    trained = train_bundle(
        df,
        task,
        TrainingParams(epochs=1, batch_size=128, detector=detector),
        factory_schema().roles(task),
        alarms=alarms,
    )
    reported = set(evaluate_bundle(trained.bundle, df, alarms=alarms).metrics)
    # Counts and alarm rates are reported but are not scores a minimum makes sense for.
    not_scores = {"eval_rows", "eval_fault_rate", "alarm_rate", "fallback_alarm_rate"}
    not_scores.add("baseline_alarm_rate")
    if task == Task.ANOMALY_DETECTION:
        assert set(ANOMALY_REPORTED_ONLY) <= reported  # no stale names
        not_scores.update(ANOMALY_REPORTED_ONLY)
    if detector == "window":  # the per-row autoencoder beside it, for comparison
        assert set(WINDOW_REPORTED_ONLY) <= reported
        not_scores.update(WINDOW_REPORTED_ONLY)
    else:
        assert not set(WINDOW_REPORTED_ONLY) & reported
    assert set(minimum_metrics(task)) == reported - not_scores
    assert set(comparable_metrics(task)) <= set(minimum_metrics(task))
    assert len(ANOMALY_MINIMUM_METRICS) <= MAX_MINIMUMS
    assert len(CLASSIFICATION_MINIMUM_METRICS) <= MAX_MINIMUMS


def _rules(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.extend(node.get("x-kubernetes-validations", []))
        for value in node.values():
            found.extend(_rules(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_rules(value))
    return found


def test_every_rule_message_is_documented() -> None:
    from loopline.cluster.versions import REPO_ROOT
    from loopline.types import crd_schema

    docs = (REPO_ROOT / "docs" / "resources.md").read_text()
    rules = _rules(crd_schema.model_crd()) + _rules(crd_schema.pipeline_crd())
    assert len(rules) == 24  # spec.batch.schedule repeats the Pipeline schedule rules
    for rule in rules:
        assert f"`{rule['message']}" in docs, rule["message"]


def test_a_training_run_applies_the_same_policy_rules() -> None:
    from loopline.types.runs import TrainingRunSpec

    run = {
        "runId": "r1",
        "namespace": "plant",
        "modelName": "drill-ae",
        "task": "anomaly-detection",
        "trigger": "manual",
        "featureService": "all_sensors",
        "registeredModelName": "plant.drill-ae",
        "mlflowTrackingUri": "sqlite:///x.db",
        "featureRepo": "feature_repo",
    }
    assert TrainingRunSpec.model_validate(run | {"validation": {"metric": "roc_auc"}})
    with pytest.raises(ValidationError, match=r"validation\.metric is not reported"):
        TrainingRunSpec.model_validate(run | {"validation": {"metric": "accuracy"}})
    with pytest.raises(ValidationError, match="not anomaly-detection: macro_f1"):
        TrainingRunSpec.model_validate(run | {"validation": {"minimums": {"macro_f1": 0.5}}})
