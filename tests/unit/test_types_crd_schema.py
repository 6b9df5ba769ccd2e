"""The CRD YAML in manifests/crds is what the pydantic types generate, and it is structural."""

from __future__ import annotations

from typing import Any

import yaml

from loopline.types import crd_schema


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


def test_files_on_disk_match_the_types() -> None:
    assert crd_schema.stale_files() == [], "run: python -m loopline.types.crd_schema"


def test_schemas_are_structural() -> None:
    for crd in (crd_schema.model_crd(), crd_schema.pipeline_crd()):
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert not {"$ref", "anyOf", "title"} & set(node), path
            if "properties" in node and path.endswith(("spec", "status")):
                assert node.get("type") == "object", path
            if node.get("type") == "object":
                assert not ("properties" in node and "additionalProperties" in node), path


def test_training_overrides_have_no_defaults() -> None:
    spec = crd_schema.model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    training = spec["properties"]["spec"]["properties"]["training"]
    assert not [p for p, n in _walk(training) if "default" in n]
    assert spec["properties"]["spec"]["required"] == ["task", "pipelineRef"]


def test_cel_rules_and_names() -> None:
    text = yaml.safe_dump(crd_schema.model_crd())
    assert "self.steps.isSorted()" in text
    assert "!self.retrainOnDrift || self.enabled" in text
    names = crd_schema.model_crd()["spec"]["names"]
    # Seldon Core 2 uses mlm/mls/mlx/mlc and no categories of ours.
    assert names["shortNames"] == ["lm"]
    assert names["categories"] == ["loopline"]
    columns = [
        c["name"] for c in crd_schema.model_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert {"Phase", "Champion", "Endpoint", "Drift", "Age"} <= set(columns)


def test_exclusive_bounds_use_openapi_v3_form() -> None:
    text = yaml.safe_dump(crd_schema.model_crd())
    assert "exclusiveMinimum: true" in text
