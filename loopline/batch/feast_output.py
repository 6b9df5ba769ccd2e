"""Batch scores as a source of the feature repository others can read.

Each Model gets one Feast FileSource and feature view (`scores_<namespace>_<name>`) over the
folder its batch runs write into, keyed like the readings (entity + timestamp) with
`scored_at` as the created timestamp, so a window scored twice answers with the newer scores.
The registrations are kept in the repository's `scores.json` as well as applied, so the
repository's definitions.py (the `feast` CLI) sees the same views and `feast apply` there does
not delete them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from loopline.batch.plan import SCORED_AT_COLUMN
from loopline.data.feature_definitions import RepoSpec

SCORES_FILE = "scores.json"


def _feast_type(kind: pa.DataType) -> Any:
    from feast.types import Bool, Float64, Int64, String

    if pa.types.is_boolean(kind):
        return Bool
    if pa.types.is_integer(kind):
        return Int64
    if pa.types.is_floating(kind):
        return Float64
    return String


def score_entry(folder: Path, schema: pa.Schema, keys: list[str]) -> dict[str, Any]:
    """What `scores.json` keeps of one view: its folder and its value columns' arrow types."""
    values = [f for f in schema if f.name not in keys and f.name != SCORED_AT_COLUMN]
    return {"path": str(folder), "fields": {f.name: str(f.type) for f in values}}


def _arrow(type_name: str) -> pa.DataType:
    return {"bool": pa.bool_(), "int64": pa.int64(), "double": pa.float64()}.get(
        type_name, pa.string()
    )


def score_objects(repo_dir: Path) -> list[Any]:
    """The Feast sources and views of every batch-score registration in `repo_dir`."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import String

    path = Path(repo_dir) / SCORES_FILE
    if not path.is_file():
        return []
    spec = RepoSpec.load(repo_dir)
    schema = spec.data_schema
    entity = Entity(
        name=spec.entity_name,
        join_keys=[schema.entity],
        value_type=ValueType.STRING,
        description=f"keyed by {schema.entity}",
    )
    objects: list[Any] = []
    for name, entry in sorted(json.loads(path.read_text()).items()):
        source = FileSource(
            name=f"{name}_source",
            path=entry["path"],
            timestamp_field=schema.timestamp,
            created_timestamp_column=SCORED_AT_COLUMN,
        )
        view = FeatureView(
            name=name,
            entities=[entity],
            ttl=timedelta(hours=spec.ttl_hours),
            schema=[
                Field(name=schema.entity, dtype=String),
                *[
                    Field(name=col, dtype=_feast_type(_arrow(kind)))
                    for col, kind in entry["fields"].items()
                ],
            ],
            online=False,
            source=source,
            tags={"loopline.dev/batch-scores": "true"},
        )
        objects += [source, view]
    return [entity, *objects] if objects else []


def register_scores(
    repo_dir: Path, view: str, folder: Path, schema: pa.Schema, keys: list[str]
) -> str:
    """Record and apply the view over `folder`; its name."""
    from loopline.data.features import open_store

    path = Path(repo_dir) / SCORES_FILE
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[view] = score_entry(folder.resolve(), schema, keys)
    tmp = path.with_name(f".{SCORES_FILE}.tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    open_store(repo_dir).apply(score_objects(repo_dir))
    return view
