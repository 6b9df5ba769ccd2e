"""The generated CRDs in the real API server: examples apply, invalid objects are rejected
with a message naming the field, defaults land, and names coexist with Seldon Core 2's."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.cluster.versions import REPO_ROOT
from tests.fixtures.cluster import ClusterHandle

EXAMPLES = REPO_ROOT / "manifests" / "examples"
SELDON_CRDS = REPO_ROOT / "tests" / "fixtures" / "seldon-core-v2"


def _kubectl(cluster: ClusterHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def seldon(cluster: ClusterHandle) -> list[str]:
    return cluster.install_crds(SELDON_CRDS)


def _model(**spec: Any) -> dict[str, Any]:
    body = {"task": "anomaly-detection", "pipelineRef": {"name": "training"}} | spec
    return {
        "apiVersion": "loopline.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": body,
    }


def test_examples_apply_next_to_seldon(
    cluster: ClusterHandle, namespace: str, seldon: list[str]
) -> None:
    assert "models.mlops.seldon.io" in seldon
    for path in sorted(EXAMPLES.glob("*.yaml")):
        done = _kubectl(cluster, "apply", "-n", namespace, "-f", str(path))
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
    table = _kubectl(cluster, "get", "models.loopline.dev", "-n", namespace, "-o", "wide")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    for column in ("TASK", "PHASE", "CHAMPION", "ENDPOINT", "DRIFT", "AGE"):
        assert column in header
    assert {"drill-ae", "fault-classifier"} <= {
        line.split()[0] for line in table.stdout.splitlines()[1:]
    }
    ours = _kubectl(cluster, "get", "lm", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(ours) == ["model.loopline.dev/drill-ae", "model.loopline.dev/fault-classifier"]
    pipelines = _kubectl(cluster, "get", "lpl", "-n", namespace, "-o", "name").stdout.split()
    assert pipelines == ["pipeline.loopline.dev/training"]
    category = _kubectl(cluster, "get", "loopline", "-n", namespace, "-o", "name").stdout.split()
    assert len(category) == 3
    theirs = _kubectl(cluster, "get", "mlm", "-n", namespace)
    assert theirs.returncode == 0, theirs.stderr  # Seldon's short name still means Seldon
    assert "drill-ae" not in theirs.stdout


def test_defaults_are_applied(kube_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(kube_api)
    obj = api.create_namespaced_custom_object(
        "loopline.dev", "v1alpha1", namespace, "models", _model()
    )
    spec = obj["spec"]
    assert spec["serving"]["canary"]["steps"] == [10, 50, 100]
    assert spec["monitoring"]["detector"] == "ks"
    assert spec["validation"]["dataQuality"]["completeness"] == 0.95
    assert "training" not in spec  # overrides have no defaults
    assert "alarms" not in spec  # unset stays unset (a Model without it trains as before)
    with_alarms = api.create_namespaced_custom_object(
        "loopline.dev",
        "v1alpha1",
        namespace,
        "models",
        _model(alarms={"maxFalseAlarmRate": 0.01}) | {"metadata": {"name": "with-alarms"}},
    )
    assert with_alarms["spec"]["alarms"] == {
        "maxFalseAlarmRate": 0.01,
        "window": 8,
        "raiseAt": 5,
        "clearBelow": 1,
    }


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"task": "regression"}, "spec.task", "Unsupported value"),
        (
            {"serving": {"canary": {"steps": [50, 10, 100]}}},
            "spec.serving.canary.steps",
            "strictly increasing",
        ),
        ({"serving": {"canary": {"steps": [10, 50]}}}, "spec.serving.canary.steps", "end at 100"),
        (
            {"serving": {"canary": {"steps": [10, 10, 100]}}},
            "spec.serving.canary.steps",
            "Duplicate",
        ),
        (
            {"monitoring": {"enabled": False, "retrainOnDrift": True}},
            "spec.monitoring.retrainOnDrift",
            "needs monitoring.enabled",
        ),
        ({"monitoring": {"pValue": 1.5}}, "spec.monitoring.pValue", "less than 1"),
        ({"serving": {"replicas": -1}}, "spec.serving.replicas", "greater than or equal to 0"),
        # the default window is 8 readings
        ({"alarms": {"raiseAt": 9}}, "spec.alarms.raiseAt", "alarms.raiseAt must not exceed"),
        (
            {"alarms": {"raiseAt": 2, "clearBelow": 3}},
            "spec.alarms.clearBelow",
            "alarms.clearBelow must not exceed alarms.raiseAt",
        ),
        ({"alarms": {"maxFalseAlarmRate": 0}}, "spec.alarms.maxFalseAlarmRate", "greater than 0"),
    ],
)
def test_invalid_models_are_rejected_naming_the_field(
    kube_api: k8s.ApiClient, namespace: str, spec: dict[str, Any], field: str, words: str
) -> None:
    api = k8s.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_custom_object(
            "loopline.dev", "v1alpha1", namespace, "models", _model(**spec)
        )
    assert caught.value.status == 422
    assert field in caught.value.body
    assert words in caught.value.body


def test_missing_pipeline_ref_is_rejected(kube_api: k8s.ApiClient, namespace: str) -> None:
    body = _model()
    del body["spec"]["pipelineRef"]
    with pytest.raises(ApiException) as caught:
        k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            "loopline.dev", "v1alpha1", namespace, "models", body
        )
    assert caught.value.status == 422
    assert "spec.pipelineRef: Required value" in caught.value.body


def test_pipeline_needs_exactly_one_source(kube_api: k8s.ApiClient, namespace: str) -> None:
    body = yaml.safe_load((EXAMPLES / "pipeline-training.yaml").read_text())
    body["spec"]["packageUri"] = "training"
    with pytest.raises(ApiException) as caught:
        k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            "loopline.dev", "v1alpha1", namespace, "pipelines", body
        )
    assert "exactly one of spec.pipeline or spec.packageUri" in caught.value.body


def test_example_files_are_what_the_docs_promise() -> None:
    names = sorted(p.name for p in Path(EXAMPLES).glob("*.yaml"))
    assert names == ["model-drill-ae.yaml", "model-fault-classifier.yaml", "pipeline-training.yaml"]
