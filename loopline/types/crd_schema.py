"""Generate the CustomResourceDefinitions of Model, Pipeline and ModelApproval from the
pydantic types.

The pydantic types are the single source: their JSON schema is turned into a structural
OpenAPI v3 schema (refs inlined, `Optional` unwrapped, JSON Schema 2020 exclusive bounds
rewritten in the OpenAPI 3.0 form the API server speaks, `default_factory` values rendered as
defaults), and cross-field rules travel as `x-kubernetes-validations` in the types'
`json_schema_extra`. `python -m loopline.types.crd_schema` rewrites manifests/crds/;
`--check` fails when the files on disk differ (a unit test runs the same comparison).

Names: Seldon Core 2 (`mlops.seldon.io`) and Kubeflow Pipelines also define kinds called Model
and Pipeline, so our short names (`lm`, `lpl`) and category (`loopline`) differ from theirs,
and documentation uses the fully qualified `models.loopline.dev`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema, to_jsonable_python

from loopline.types.approval import ModelApprovalSpec, ModelApprovalStatus
from loopline.types.common import GROUP, VERSION
from loopline.types.model import ModelSpec
from loopline.types.pipeline import PipelineSpec
from loopline.types.status import ModelStatus, PipelineStatus

CATEGORY = "loopline"
MODEL_SHORT_NAMES = ["lm"]
PIPELINE_SHORT_NAMES = ["lpl"]
APPROVAL_SHORT_NAMES = ["lma"]
CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"

_DROP = {"title"}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Render `default_factory` values as defaults (nested objects in full, because the API
    server checks a default against the object's CEL rules before nested defaults apply)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        factory = schema.get("default_factory")
        if "default" not in schema and factory is not None:
            value = factory()  # type: ignore[call-arg]
            json_schema = dict(json_schema)
            if isinstance(value, BaseModel):
                # The whole object: CEL rules on it are checked against the default itself.
                # An unset optional field stays out (the schema has no nullable fields).
                json_schema["default"] = value.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            else:
                json_schema["default"] = to_jsonable_python(value)
        return json_schema


def _structural(node: Any, defs: dict[str, Any], strip_defaults: bool) -> Any:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    if isinstance(node, list):
        return [_structural(item, defs, strip_defaults) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, strip_defaults)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            rest.pop("default")
        return _structural({**options[0], **rest}, defs, strip_defaults)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and strip_defaults):
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; `false` is not allowed
        if key == "properties":
            out[key] = {
                name: _structural(prop, defs, strip_defaults or name == "training")
                for name, prop in value.items()
            }
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs, strip_defaults)
        else:
            out[key] = value
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of a spec or status type (`training` overrides carry no
    defaults, so only the fields a user set override the Pipeline's)."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs, strip_defaults=False)
    schema.pop("description", None)
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(spec),
                                "status": openapi_schema(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def _condition_column(name: str, type_: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
    }


def model_crd() -> dict[str, Any]:
    return _crd(
        kind="Model",
        plural="models",
        short_names=MODEL_SHORT_NAMES,
        spec=ModelSpec,
        status=ModelStatus,
        description="A Loopline Model: a model that is trained, validated, served, watched "
        "for drift and retrained by the Loopline operator.",
        columns=[
            {"name": "Task", "type": "string", "jsonPath": ".spec.task", "priority": 1},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Champion", "type": "string", "jsonPath": ".status.champion.version"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoints.primary"},
            _condition_column("Drift", "Drifted"),
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def pipeline_crd() -> dict[str, Any]:
    return _crd(
        kind="Pipeline",
        plural="pipelines",
        short_names=PIPELINE_SHORT_NAMES,
        spec=PipelineSpec,
        status=PipelineStatus,
        description="A Loopline Pipeline: a training pipeline template that Models reference.",
        columns=[
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipeline"},
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Last Success", "type": "date", "jsonPath": ".status.lastSuccess"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def approval_crd() -> dict[str, Any]:
    return _crd(
        kind="ModelApproval",
        plural="modelapprovals",
        short_names=APPROVAL_SHORT_NAMES,
        spec=ModelApprovalSpec,
        status=ModelApprovalStatus,
        description="A person's decision (approve or reject) about a Model's challenger that "
        "awaits approval; immutable, the API server checks the approver's name.",
        columns=[
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
            {"name": "Decision", "type": "string", "jsonPath": ".spec.decision"},
            {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
            {"name": "Applied", "type": "boolean", "jsonPath": ".status.applied"},
            {"name": "Reason", "type": "string", "jsonPath": ".spec.reason", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


HEADER = "# Generated by `python -m loopline.types.crd_schema` from loopline/types; do not edit.\n"


def render() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    files: dict[str, str] = {}
    for crd in (model_crd(), pipeline_crd(), approval_crd()):
        name = f"{crd['metadata']['name']}.yaml"
        files[name] = HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
    return files


def stale_files(directory: Path = CRD_DIR) -> list[str]:
    """Names of CRD files that are missing or differ from what the types generate."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    parser.add_argument("--out", type=Path, default=CRD_DIR)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(f"out of date: {', '.join(stale)}; run python -m loopline.types.crd_schema")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
