"""Every field a user can set in a CRD is read by the code: a field the schema accepts and
nothing reads would be a promise the platform does not keep.

The walk covers every property under `spec` of every CRD in manifests/crds. A field counts as
read when code outside the types themselves (loopline.types, which only declares it) reads
its attribute (`.snake_name`) or names its wire key (`"camelName"`). Fields whose behaviour is
subtle have their own tests (e.g. serving.protocol -> status.endpoints.primary,
serving.fallbackOnMissingSensors -> the server's 422); this test stops the next one from
being added without anything behind it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("loopline", "operators", "serving", "monitoring", "pipelines", "components")


@functools.cache
def _code() -> str:
    return "\n".join(
        path.read_text()
        for folder in CODE_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "loopline/types/" not in path.as_posix()
    )


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    for key, sub in (schema.get("properties") or {}).items():
        where = f"{path}.{key}"
        yield where, key
        if sub.get("type") == "object":
            yield from _fields(sub, where)
        items = sub.get("items")
        if sub.get("type") == "array" and isinstance(items, dict):
            yield from _fields(items, f"{where}[]")


def _spec_fields() -> list[tuple[str, str]]:
    found = []
    for crd in sorted((ROOT / "manifests" / "crds").glob("*.yaml")):
        doc = yaml.safe_load(crd.read_text())
        for version in doc["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            found += [(f"{crd.name}: {where}", key) for where, key in _fields(spec, "spec")]
    return found


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def test_the_walk_sees_the_fields_we_know() -> None:
    wheres = {where for where, _ in _spec_fields()}
    assert "models.loopline.dev.yaml: spec.serving.fallbackOnMissingSensors" in wheres
    assert "pipelines.loopline.dev.yaml: spec.schedule" in wheres
    assert len(wheres) > 30


@pytest.mark.parametrize(("where", "key"), _spec_fields(), ids=lambda v: str(v))
def test_every_crd_field_is_read_by_the_code(where: str, key: str) -> None:
    code = _code()
    attribute = re.search(rf"\.{re.escape(_snake(key))}\b", code)
    wire_key = re.search(rf"[\"']{re.escape(key)}[\"']", code)
    assert attribute or wire_key, f"{where}: accepted by the CRD but read by no code"
