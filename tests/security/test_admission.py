"""Values that cannot work are refused by the real API server when they are applied, not 40 s
into a training run: each with the field named and the message docs/resources.md documents, and the
operator's pydantic parse of the same spec refuses it too, so the two cannot drift apart.

The cluster fixture installs the generated CRDs, so the API server has also compiled every CEL
rule and priced it against its cost budget (an over-budget rule fails the install, and
`loopline_crds` fails these tests with the API server's message).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from loopline.cluster.versions import REPO_ROOT
from loopline.types.model import (
    ANOMALY_RATE_MESSAGE,
    IMMUTABLE_MESSAGES,
    LATENCY_THRESHOLD_MESSAGE,
    METRIC_MESSAGE,
    RATE_THRESHOLD_MESSAGE,
    ModelSpec,
)
from loopline.types.pipeline import (
    CRON_MESSAGE,
    CRON_ORDER_MESSAGE,
    PACKAGE_URI_MESSAGE,
    PIPELINE_MESSAGE,
    PipelineSpec,
)
from loopline.types.policy import MINIMUMS_RANGE_MESSAGE, MINIMUMS_TASK_MESSAGE
from tests.fixtures.cluster import TEST_NAMESPACE_LABEL, ClusterHandle

pytestmark = pytest.mark.security

EXAMPLES = REPO_ROOT / "manifests" / "examples"
GROUP, VERSION = "loopline.dev", "v1alpha1"
DOCS = (REPO_ROOT / "docs" / "resources.md").read_text()
# What a CEL rule that failed to evaluate prints instead of its message.
LEAKS = ("evaluating rule", "index out of bounds", "no such key", "no matching overload")


@pytest.fixture(scope="module")
def ns(cluster: ClusterHandle, loopline_crds: list[str]) -> Iterator[str]:
    """One namespace for the module: refused objects are never stored."""
    assert {"models.loopline.dev", "pipelines.loopline.dev"} <= set(loopline_crds)
    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        name = f"admission-{uuid.uuid4().hex[:8]}"
        core.create_namespace(
            k8s.V1Namespace(
                metadata=k8s.V1ObjectMeta(name=name, labels={TEST_NAMESPACE_LABEL: "true"})
            )
        )
        try:
            yield name
        finally:
            core.delete_namespace(name)


@pytest.fixture(scope="module")
def objects(cluster: ClusterHandle) -> Iterator[k8s.CustomObjectsApi]:
    with cluster.api_client() as api:
        yield k8s.CustomObjectsApi(api)


def _body(kind: str, spec: dict[str, Any], name: str = "m") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def _model_spec(**spec: Any) -> dict[str, Any]:
    return {"task": "anomaly-detection", "pipelineRef": {"name": "training"}} | spec


def _pipeline_spec(**spec: Any) -> dict[str, Any]:
    return {k: v for k, v in ({"pipeline": "training"} | spec).items() if v is not None}


def _refused(api: k8s.CustomObjectsApi, ns: str, plural: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
    assert caught.value.status == 422, caught.value.body
    text = str(json.loads(caught.value.body)["message"])  # what kubectl prints
    for leak in LEAKS:
        assert leak not in text, text
    return text


# Messages of our CEL rules (the others are the API server's own schema messages).
CEL_MESSAGES = {
    MINIMUMS_RANGE_MESSAGE,
    METRIC_MESSAGE,
    RATE_THRESHOLD_MESSAGE,
    LATENCY_THRESHOLD_MESSAGE,
    ANOMALY_RATE_MESSAGE,
    MINIMUMS_TASK_MESSAGE,
}

MODEL_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "hidden-units-not-positive",
        {"training": {"hiddenUnits": [-5, 0]}},
        "spec.training.hiddenUnits[0]",
        "should be greater than or equal to 1",
    ),
    (
        "minimum-above-one",
        {"validation": {"minimums": {"f1": 5}}},
        "spec.validation.minimums.f1",
        "should be less than or equal to 1",
    ),
    (
        "minimum-below-zero",
        {"validation": {"minimums": {"f1": -0.5}}},
        "spec.validation.minimums",
        MINIMUMS_RANGE_MESSAGE,
    ),
    (
        "minimum-of-unknown-metric",
        {"validation": {"minimums": {"no_such_metric": 0.5}}},
        "spec.validation.minimums",
        MINIMUMS_TASK_MESSAGE,
    ),
    (
        "minimum-of-a-classifier-metric",
        {"validation": {"minimums": {"accuracy": 0.5}}},
        "spec.validation.minimums",
        MINIMUMS_TASK_MESSAGE,
    ),
    (
        "twenty-thousand-minimums",
        {"validation": {"minimums": {f"m{i}": 0.5 for i in range(20_000)}}},
        "spec.validation.minimums",
        "must have at most 16 items",
    ),
    (
        "classifier-metric-on-detector",
        {"validation": {"metric": "macro_f1"}},
        "spec.validation.metric",
        METRIC_MESSAGE,
    ),
    (
        "unknown-metric",
        {"validation": {"metric": "loss"}},
        "spec.validation.metric",
        "Unsupported value",
    ),
    (
        "rate-threshold-above-one",
        {"serving": {"canary": {"abortThreshold": 5}}},
        "spec.serving.canary.abortThreshold",
        RATE_THRESHOLD_MESSAGE,
    ),
    (
        "latency-threshold-zero",
        {"serving": {"canary": {"abortMetric": "latency_p95_seconds", "abortThreshold": 0}}},
        "spec.serving.canary.abortThreshold",
        LATENCY_THRESHOLD_MESSAGE,
    ),
    (
        "anomaly-rate-on-classifier",
        {
            "task": "classification",
            "serving": {"canary": {"abortMetric": "anomaly_rate_delta"}},
        },
        "spec.serving.canary.abortMetric",
        ANOMALY_RATE_MESSAGE,
    ),
    ("entity-key-5000", {"entityKey": "k" * 5000}, "spec.entityKey", "Too long"),
    ("entity-key-not-a-column", {"entityKey": "machine-id"}, "spec.entityKey", "should match"),
    (
        "no-canary-steps",
        {"serving": {"canary": {"steps": []}}},
        "spec.serving.canary.steps",
        "should have at least 1 items",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [case[1:] for case in MODEL_CASES],
    ids=[case[0] for case in MODEL_CASES],
)
def test_model_values_that_cannot_work_are_refused(
    objects: k8s.CustomObjectsApi, ns: str, spec: dict[str, Any], field: str, message: str
) -> None:
    text = _refused(objects, ns, "models", _body("Model", _model_spec(**spec)))
    assert f"{field}:" in text
    assert message in text
    with pytest.raises(ValidationError) as caught:  # the operator's parse refuses it too
        ModelSpec.model_validate(_model_spec(**spec))
    if message in CEL_MESSAGES:
        assert message in str(caught.value)  # with the same words


PIPELINE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "package-uri-a-host-path",
        {"pipeline": None, "packageUri": "/etc/passwd"},
        "spec.packageUri",
        PACKAGE_URI_MESSAGE,
    ),
    (
        "package-uri-a-url",
        {"pipeline": None, "packageUri": "file:///tmp/pipeline.yaml"},
        "spec.packageUri",
        PACKAGE_URI_MESSAGE,
    ),
    ("unknown-pipeline", {"pipeline": "no-such-pipeline"}, "spec.pipeline", PIPELINE_MESSAGE),
    (
        "cron-out-of-range",
        {"schedule": "61 25 * * *"},
        "spec.schedule",
        f"{CRON_MESSAGE}; got 61 25 * * *",
    ),
    ("cron-letters", {"schedule": "a b c d e"}, "spec.schedule", f"{CRON_MESSAGE}; got a b c d e"),
    ("cron-four-fields", {"schedule": "0 3 * *"}, "spec.schedule", CRON_MESSAGE),
    ("cron-backwards-range", {"schedule": "5-1 * * * *"}, "spec.schedule", CRON_ORDER_MESSAGE),
    (
        "hidden-units-not-positive",
        {"parameters": {"hiddenUnits": [-5, 0]}},
        "spec.parameters.hiddenUnits[0]",
        "should be greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [case[1:] for case in PIPELINE_CASES],
    ids=[case[0] for case in PIPELINE_CASES],
)
def test_pipeline_values_that_cannot_work_are_refused(
    objects: k8s.CustomObjectsApi, ns: str, spec: dict[str, Any], field: str, message: str
) -> None:
    text = _refused(objects, ns, "pipelines", _body("Pipeline", _pipeline_spec(**spec), "p"))
    assert f"{field}:" in text
    assert message in text
    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate(_pipeline_spec(**spec))
    if "should" not in message:
        assert message in str(caught.value)


def test_valid_edges_are_accepted(objects: k8s.CustomObjectsApi, ns: str) -> None:
    """The rules refuse what cannot work, not what merely looks unusual."""
    model = _model_spec(
        entityKey="Pump_ID",
        training={"hiddenUnits": [4096, 1]},
        validation={"metric": "roc_auc", "minimums": {"f1_gain_over_baseline": -0.1, "f1": 1}},
        serving={"canary": {"abortMetric": "latency_p95_seconds", "abortThreshold": 3600}},
    )
    classifier = _model_spec(
        task="classification",
        validation={"metric": "accuracy", "minimums": {"macro_f1": 0.5, "accuracy": 0.5}},
    )
    pipeline = _pipeline_spec(schedule=" */5 0-23/2 1,15 1-12 0-7 ")
    package = _pipeline_spec(pipeline=None, packageUri="training")
    for kind, plural, spec, name in (
        ("Model", "models", model, "edge-model"),
        ("Model", "models", classifier, "edge-classifier"),
        ("Pipeline", "pipelines", pipeline, "edge-schedule"),
        ("Pipeline", "pipelines", package, "edge-package"),
    ):
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, plural, _body(kind, spec, name))
        parse = ModelSpec if kind == "Model" else PipelineSpec
        parse.model_validate(spec)


def test_examples_are_accepted(objects: k8s.CustomObjectsApi, ns: str) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        body["metadata"]["name"] = f"example-{body['metadata']['name']}"
        plural = "models" if body["kind"] == "Model" else "pipelines"
        stored = objects.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
        parse = ModelSpec if body["kind"] == "Model" else PipelineSpec
        parse.model_validate(stored["spec"])  # the operator parses what the server stored


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("task", {"task": "classification"}),
        ("pipelineRef", {"pipelineRef": {"name": "other"}}),
        ("entityKey", {"entityKey": "pump_id"}),
        ("entityKey", {"entityKey": None}),
    ],
    ids=["task", "pipelineRef", "entityKey-set", "entityKey-cleared"],
)
def test_immutable_fields_are_refused_on_update(
    objects: k8s.CustomObjectsApi, ns: str, field: str, change: dict[str, Any]
) -> None:
    """A Model without entityKey (the registered entity) may not gain one, and one with it may
    neither change nor lose it."""
    cleared = change == {"entityKey": None}
    name = f"immutable-{field.lower()}{'-cleared' if cleared else ''}"
    spec = _model_spec(entityKey="machine_id") if cleared else _model_spec()
    objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, "models", _body("Model", spec, name)
    )
    with pytest.raises(ApiException) as caught:
        objects.patch_namespaced_custom_object(GROUP, VERSION, ns, "models", name, {"spec": change})
    assert caught.value.status == 422, caught.value.body
    assert f"spec.{field}:" in str(caught.value.body)
    assert IMMUTABLE_MESSAGES[field] in str(caught.value.body)
    assert IMMUTABLE_MESSAGES[field] in DOCS
    # A field that may change still can: the refusal is about the field, not the object.
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "models", name, {"spec": {"serving": {"replicas": 2}}}
    )
    assert patched["spec"]["serving"]["replicas"] == 2
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, ns, "models", name)
    assert stored["spec"]["task"] == "anomaly-detection"
    assert stored["spec"].get("entityKey") == spec.get("entityKey")
