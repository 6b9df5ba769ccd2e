"""spec.serving.resources: Kubernetes quantities, a request never above its limit (the same
rule and message as the CRD's CEL rule), and the files `loopline serve pod` writes."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loopline.serving.local_spec import LocalModelSpec
from loopline.serving.pod import PodPorts, write_server_folder
from loopline.types import crd_schema
from loopline.types.model import ModelSpec, quantity_value


def _spec(resources: dict[str, Any]) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "task": "anomaly-detection",
            "pipelineRef": {"name": "training"},
            "serving": {"resources": resources},
        }
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("2.5", Decimal("2.5")),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert quantity_value(text) == value


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ({"requests": {"cpu": "-1"}}, "should match pattern"),
        ({"requests": {"cpu": "1 core"}}, "should match pattern"),
        ({"limits": {"memory": "128m"}}, "should match pattern"),  # milli-bytes
        ({"limits": {"memory": "2GB"}}, "should match pattern"),
        ({"requests": {"gpu": "1"}}, "Extra inputs are not permitted"),
        (
            {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}},
            "serving.resources.requests.cpu must not exceed serving.resources.limits.cpu",
        ),
        (
            {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
            "serving.resources.requests.memory must not exceed serving.resources.limits.memory",
        ),
    ],
)
def test_bad_resources_are_refused(resources: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        _spec(resources)


def test_good_resources() -> None:
    spec = _spec({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m"}})
    assert spec.serving.resources is not None
    assert spec.serving.resources.as_kubernetes() == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "1000m"},
    }
    assert _spec({"requests": {"memory": "1024Mi"}, "limits": {"memory": "1Gi"}})


def test_the_crd_carries_the_same_rules() -> None:
    crd = crd_schema.model_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    resources = spec["properties"]["serving"]["properties"]["resources"]
    messages = {r["message"] for r in resources["x-kubernetes-validations"]}
    assert messages == {
        "serving.resources.requests.cpu must not exceed serving.resources.limits.cpu",
        "serving.resources.requests.memory must not exceed serving.resources.limits.memory",
    }
    cpu = resources["properties"]["requests"]["properties"]["cpu"]
    assert cpu["maxLength"] == 32  # bounds the CEL rule's cost
    assert "resources" not in spec["properties"]["serving"]["default"]


def test_serve_pod_writes_the_server_folder(tmp_path: Path) -> None:
    spec = LocalModelSpec(
        name="drill-ae",
        model_uri="models:/plant.drill-ae/3",
        canary_model_uri="models:/plant.drill-ae/4",
        canary_weight=0.1,
        fallback_on_missing_sensors=False,
    )
    (tmp_path / "models" / "old-name").mkdir(parents=True)
    (tmp_path / "models" / "old-name" / "model-settings.json").write_text("{}")
    write_server_folder(tmp_path, spec, PodPorts())
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["host"] == "0.0.0.0"
    assert (settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (
        8080,
        8081,
        8082,
    )
    found = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("models/*/model-settings.json"))
    assert found == [Path("models/drill-ae/model-settings.json")]  # the server wants one
    model = json.loads((tmp_path / found[0]).read_text())
    extra = model["parameters"]["extra"]
    assert extra["canary_model_uri"] == "models:/plant.drill-ae/4"
    assert extra["canary_weight"] == 0.1
    assert extra["fallback_on_missing_sensors"] is False


def test_pod_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="three different ports"):
        PodPorts(8080, 8080, 8082)
