"""Bring your own data: declare a schema for a user's file and turn it into a feature repository.

A user names the entity and timestamp columns (and optionally the features, the core subset and
a label); `declare_schema` fills in the rest from the file (numeric columns become features) and
`register` validates the file against the schema, creates the Feast repository (feature view +
feature services), applies it and materializes the newest values. The user writes no Feast
code; a file that does not fit gets a `SchemaError` naming the column and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loopline.data import features
from loopline.data.schema import (
    ENTITY,
    FEAST_ENTITY,
    TIMESTAMP,
    DatasetSchema,
    FeatureSpec,
    LabelSpec,
    SchemaError,
)


def declare_schema(
    frame: pd.DataFrame,
    *,
    entity: str = ENTITY,
    timestamp: str = TIMESTAMP,
    feature_names: Sequence[str] | None = None,
    core: Sequence[str] | None = None,
    label: str | None = None,
    name: str = "sensors",
) -> DatasetSchema:
    """A schema for `frame`: declared columns as given, undeclared features inferred.

    Without `feature_names`, every numeric column other than the entity, timestamp and label is
    a feature. A declared feature that is not numeric is an error (wrong dtype), not skipped.
    """
    for role, col in (("entity", entity), ("timestamp", timestamp), ("label", label)):
        if col is not None and col not in frame.columns:
            raise SchemaError(
                f"{role} column {col!r} not in the file; its columns are {list(frame.columns)}"
            )
    reserved = {entity, timestamp, *([label] if label else [])}
    if feature_names is None:
        names = [
            str(c)
            for c in frame.columns
            if c not in reserved
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
        if not names:
            raise SchemaError(
                f"no numeric feature columns besides {sorted(reserved)}; declare them with "
                "--features"
            )
    else:
        names = list(feature_names)
    specs = []
    for n in names:
        dtype = "int" if n in frame.columns and pd.api.types.is_integer_dtype(frame[n]) else "float"
        specs.append(FeatureSpec(name=n, dtype=dtype))
    labels = []
    if label:
        label_dtype = "int" if pd.api.types.is_integer_dtype(frame[label]) else "str"
        labels.append(LabelSpec(name=label, dtype=label_dtype))
    try:
        return DatasetSchema(
            name=name,
            entity=entity,
            timestamp=timestamp,
            features=specs,
            core=list(core or []),
            labels=labels,
        )
    except ValueError as exc:  # pydantic's message names the field (core, features, …)
        raise SchemaError(str(exc)) from exc


@dataclass(frozen=True)
class Registered:
    """What `register` made: the repository, its spec and a summary line."""

    repo_dir: Path
    spec: features.RepoSpec
    rows: int
    summary: str


def register(
    source: Path,
    repo_dir: Path,
    schema: DatasetSchema,
    *,
    materialize: bool = True,
    rolling: bool = True,
) -> Registered:
    """Validate `source` against `schema`, create + apply the repository, materialize it."""
    frame = features.read_source(Path(source))
    names = {} if schema.entity == ENTITY else {"entity_name": _entity_name(schema.entity)}
    spec = features.create_repo(repo_dir, frame, schema, rolling=rolling, names=names)
    store = features.apply(repo_dir)
    if materialize:
        features.materialize(repo_dir, store=store)
    summary = (
        f"registered {len(frame)} rows of {source} in {repo_dir}: entity {spec.entity_name} "
        f"({schema.entity}), feature view {spec.raw_view} ({len(schema.features)} features), "
        f"services {', '.join(spec.services)}" + ("; online store filled" if materialize else "")
    )
    return Registered(repo_dir=Path(repo_dir), spec=spec, rows=len(frame), summary=summary)


def _entity_name(column: str) -> str:
    """Feast entity name for a user's key column: `site_id` -> `site` (factory: `machine`)."""
    base = column.removesuffix("_id") or column
    return base if base != "machine" else FEAST_ENTITY
