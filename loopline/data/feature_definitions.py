"""The feature repository's definitions as data: `RepoSpec` (the source file and its declared
schema) and `feast_objects()`, the pure function that turns a spec into Feast's entity, views
and services, so the generator's data and a user's own file get them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from loopline.data.schema import (
    ALL_SENSORS_SERVICE,
    CORE_SENSORS_SERVICE,
    FEAST_ENTITY,
    RAW_VIEW,
    ROLLING_VIEW,
    DatasetSchema,
)

SPEC_FILE = "repo.json"
ROLLING_STATS = ("mean", "std")


def entity_name_of(column: str) -> str:
    """Feast entity name of a key column: `site_id` -> `site`, `machine_id` -> `machine`."""
    return column.removesuffix("_id") or column


class RepoSpec(BaseModel):
    """What a feature repository serves: the source data, its schema, and the Feast names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    project: str = Field(default="loopline", pattern=r"^[a-z][a-z0-9_]*$")
    data_schema: DatasetSchema = Field(alias="schema")
    source: str = Field(description="Parquet file of the readings; relative to the repository.")
    rolling_source: str | None = Field(
        default=None, description="Parquet file of the rolling aggregates, if built."
    )
    rolling_windows: list[str] = Field(default_factory=lambda: ["10min", "1h"])
    entity_name: str = FEAST_ENTITY
    raw_view: str = RAW_VIEW
    rolling_view: str = ROLLING_VIEW
    all_service: str = ALL_SENSORS_SERVICE
    core_service: str = CORE_SENSORS_SERVICE
    ttl_hours: float = Field(
        default=2.0,
        gt=0,
        description="How old a reading may be and still be served for a later timestamp.",
    )

    def path(self, repo_dir: Path, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else (Path(repo_dir) / p).resolve()

    def rolling_feature_names(self) -> list[str]:
        return rolling_feature_names(self.data_schema.core_feature_names, self.rolling_windows)

    @property
    def services(self) -> list[str]:
        names = [self.all_service]
        if self.data_schema.core:
            names.append(self.core_service)
        if self.rolling_source:
            names.append(f"{self.all_service}_rolling")
        return names

    def save(self, repo_dir: Path) -> Path:
        path = Path(repo_dir) / SPEC_FILE
        path.write_text(self.model_dump_json(indent=2, by_alias=True) + "\n")
        return path

    @classmethod
    def load(cls, repo_dir: Path) -> RepoSpec:
        path = Path(repo_dir) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: create the repository first (loopline data register / "
                "loopline.data.features.create_repo)"
            )
        return cls.model_validate(json.loads(path.read_text()))


def rolling_feature_names(sensors: Sequence[str], windows: Sequence[str]) -> list[str]:
    return [f"{s}_{stat}_{w}" for w in windows for s in sensors for stat in ROLLING_STATS]


def rolling_features(
    frame: pd.DataFrame, schema: DatasetSchema, windows: Sequence[str] = ("10min", "1h")
) -> pd.DataFrame:
    """Trailing-window mean and std of the core sensors per entity, stamped at each reading.

    Each value uses readings at or before its own timestamp only, so joining it point-in-time
    leaks nothing from the future.
    """
    sensors = schema.core_feature_names or schema.feature_names
    ent, ts = schema.entity, schema.timestamp
    base = frame[[ent, ts, *sensors]].sort_values([ent, ts], kind="stable")
    base = base.reset_index(drop=True)
    out: dict[str, Any] = {}
    grouped = base.set_index(ts).groupby(ent, sort=False)[list(sensors)]
    for w in windows:
        roll = grouped.rolling(w, min_periods=1)
        mean = roll.mean()
        std = roll.std()
        for s in sensors:
            out[f"{s}_mean_{w}"] = mean[s].to_numpy(dtype=np.float32)
            out[f"{s}_std_{w}"] = std[s].fillna(0.0).to_numpy(dtype=np.float32)
    # Keys as columns, not via .to_numpy(): a tz-aware column would become Python objects.
    result = pd.concat([base[[ent, ts]], pd.DataFrame(out, index=base.index)], axis=1)
    names = rolling_feature_names(sensors, windows)
    return result[[ent, ts, *names]]


def _feast_type(dtype: str) -> Any:
    from feast.types import Float32, Float64, Int64

    return {"float": Float32, "int": Int64, "double": Float64}[dtype]


def feast_objects(spec: RepoSpec, repo_dir: Path) -> list[Any]:
    """The Feast entity, sources, feature views and services a repository spec describes."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, String

    schema = spec.data_schema
    entity = Entity(
        name=spec.entity_name,
        join_keys=[schema.entity],
        value_type=ValueType.STRING,
        description=f"keyed by {schema.entity}",
    )
    ttl = timedelta(hours=spec.ttl_hours)
    source = FileSource(
        name=f"{spec.raw_view}_source",
        path=str(spec.path(repo_dir, spec.source)),
        timestamp_field=schema.timestamp,
    )
    raw = FeatureView(
        name=spec.raw_view,
        entities=[entity],
        ttl=ttl,
        schema=[
            Field(name=schema.entity, dtype=String),
            *[
                Field(name=f.name, dtype=_feast_type(f.dtype), description=f.description)
                for f in schema.features
            ],
        ],
        online=True,
        source=source,
        tags={"loopline.dev/schema": schema.name},
    )
    objects: list[Any] = [entity, source, raw]
    services = [
        FeatureService(
            name=spec.all_service, features=[raw], description="every feature of the readings"
        )
    ]
    if schema.core:
        services.append(
            FeatureService(
                name=spec.core_service,
                features=[raw[schema.core_feature_names]],
                description="the core features: the fallback model's inputs",
            )
        )
    if spec.rolling_source:
        rolling_source = FileSource(
            name=f"{spec.rolling_view}_source",
            path=str(spec.path(repo_dir, spec.rolling_source)),
            timestamp_field=schema.timestamp,
        )
        rolling = FeatureView(
            name=spec.rolling_view,
            entities=[entity],
            ttl=ttl,
            schema=[
                Field(name=schema.entity, dtype=String),
                *[Field(name=n, dtype=Float32) for n in spec.rolling_feature_names()],
            ],
            online=True,
            source=rolling_source,
        )
        objects += [rolling_source, rolling]
        services.append(
            FeatureService(
                name=f"{spec.all_service}_rolling",
                features=[raw, rolling],
                description="readings plus trailing-window aggregates",
            )
        )
    return objects + services
