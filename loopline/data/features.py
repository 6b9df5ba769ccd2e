"""The Feast feature repository: create, apply, materialize; training sets and online features.

A repository is a directory holding `feature_store.yaml` (copied from the templates in the
project's `feature_repo/`), `definitions.py` (so the `feast` CLI works there too) and
`repo.json`: a `RepoSpec` naming the source parquet and the declared `DatasetSchema`. The Feast
objects are built from the spec by `feast_objects()`, a pure function, so the generator's data
and a user's own file (bring-your-own data) get their feature views and services the same way,
without anyone writing Feast code. Tests and the demo each create their own repository in a
temporary directory.

Training sets are point-in-time correct: the "spine" (entity, timestamp and labels of every
row in the window) is joined with `get_historical_features`, so a row never sees a feature
value from its future.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopline.data.feature_definitions import (
    ROLLING_STATS,
    SPEC_FILE,
    RepoSpec,
    entity_name_of,
    feast_objects,
    rolling_feature_names,
    rolling_features,
)
from loopline.data.schema import (
    ALL_SENSORS_SERVICE,
    DatasetSchema,
    SchemaError,
)

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Re-exported: the repository's definitions and its operations are one API.
__all__ = [
    "ROLLING_STATS",
    "SPEC_FILE",
    "RepoSpec",
    "apply",
    "create_repo",
    "feast_objects",
    "get_online_features",
    "get_training_frame",
    "materialize",
    "open_store",
    "plan",
    "read_source",
    "rolling_feature_names",
    "rolling_features",
    "source_window",
    "template_dir",
    "training_spine",
]

FEATURE_STORE_YAML = "feature_store.yaml"
DEFINITIONS_FILE = "definitions.py"
DATA_DIR = "data"
# The project's feature_repo/ (templates); an editable install or a source checkout has it.
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "feature_repo"
# An installed wheel has no checkout beside it; the images ship the same files where the
# operator's setting names them (LOOPLINE_OPERATOR_FEATURE_REPO, the Dockerfile sets it).
TEMPLATE_DIR_ENV = "LOOPLINE_OPERATOR_FEATURE_REPO"
# The offline store of the templates (loopline/data/offline_store.py; importing it imports Feast).
OFFLINE_STORE_TYPE = "loopline.data.offline_store.AsofFileOfflineStore"


def read_source(path: Path) -> pd.DataFrame:
    """A parquet or CSV file as a frame (CSV timestamps are parsed later, by column name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path)
    raise ValueError(f"source {path}: unsupported format {suffix!r}; use .parquet or .csv")


def normalise_timestamps(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Timestamps as tz-aware UTC; strings are parsed, naive values are taken as UTC."""
    if column not in frame.columns:
        return frame
    col = frame[column]
    if pd.api.types.is_datetime64_any_dtype(col):
        if str(col.dt.tz) == "UTC":
            return frame  # already right: no copy, and the source file is used where it is
        parsed = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
    elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
        try:
            parsed = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise SchemaError(
                f"timestamp column {column!r} does not hold timestamps (e.g. {col.iloc[0]!r}): {exc}"
            ) from exc
    else:
        return frame
    out = frame.copy()
    out[column] = parsed
    return out


def create_repo(
    repo_dir: Path,
    source: Path | pd.DataFrame,
    schema: DatasetSchema,
    *,
    rolling: bool = True,
    rolling_windows: Sequence[str] = ("10min", "1h"),
    names: dict[str, str] | None = None,
    ttl_hours: float = 2.0,
) -> RepoSpec:
    """Create a feature repository in `repo_dir` serving `source` (validated against `schema`).

    Parquet sources with UTC timestamps are referenced where they are; CSV files, frames and
    sources needing fixes (string or naive timestamps) are written to `repo_dir/data/`.
    Raises `SchemaError` naming the problem when the data does not match the schema.
    """
    repo_dir = Path(repo_dir).resolve()
    data_dir = repo_dir / DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(source, pd.DataFrame):
        frame, source_path = source, None
    else:
        frame = read_source(Path(source))
        source_path = Path(source).resolve()
    fixed = normalise_timestamps(frame, schema.timestamp)
    fixed = _entity_as_string(fixed, schema.entity)
    schema.validate_frame(fixed)
    if (
        source_path is None
        or source_path.suffix.lower() not in (".parquet", ".pq")
        or fixed is not frame
    ):
        source_path = data_dir / f"{schema.name}.parquet"
        fixed.to_parquet(source_path, index=False)
    spec_kwargs: dict[str, Any] = {"entity_name": entity_name_of(schema.entity), **(names or {})}
    spec = RepoSpec(
        data_schema=schema,
        source=_relative(source_path, repo_dir),
        rolling_windows=list(rolling_windows),
        ttl_hours=ttl_hours,
        **spec_kwargs,
    )
    if rolling:
        rolled = rolling_features(fixed, schema, rolling_windows)
        rolling_path = data_dir / f"{schema.name}_rolling.parquet"
        rolled.to_parquet(rolling_path, index=False)
        spec.rolling_source = _relative(rolling_path, repo_dir)
    _copy_templates(repo_dir)
    spec.save(repo_dir)
    return spec


def _relative(path: Path, repo_dir: Path) -> str:
    """Paths inside the repository are stored relative to it, so the directory can move."""
    try:
        return str(path.resolve().relative_to(repo_dir))
    except ValueError:
        return str(path.resolve())


def _entity_as_string(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Feast keys are strings here; integer ids (a common CSV case) become their decimal text."""
    if column in frame.columns and pd.api.types.is_integer_dtype(frame[column]):
        out = frame.copy()
        out[column] = out[column].astype(str)
        return out
    return frame


def template_dir() -> Path:
    """Where the repository templates are: the source checkout's feature_repo/, else the
    directory the environment names (an installed wheel in the images)."""
    candidates = [TEMPLATE_DIR]
    named = os.environ.get(TEMPLATE_DIR_ENV)
    if named:
        candidates.append(Path(named))
    for candidate in candidates:
        if all((candidate / name).is_file() for name in (FEATURE_STORE_YAML, DEFINITIONS_FILE)):
            return candidate
    raise FileNotFoundError(
        f"Feast templates ({FEATURE_STORE_YAML}, {DEFINITIONS_FILE}) not found in "
        f"{', '.join(str(c) for c in candidates)}; run Loopline from a source checkout or set "
        f"{TEMPLATE_DIR_ENV} to a directory holding them (the images set it)"
    )


def _copy_templates(repo_dir: Path) -> None:
    templates = template_dir()
    for name in (FEATURE_STORE_YAML, DEFINITIONS_FILE):
        shutil.copyfile(templates / name, repo_dir / name)


def open_store(repo_dir: Path) -> FeatureStore:
    from feast import FeatureStore

    repo_dir = Path(repo_dir).resolve()
    if not (repo_dir / FEATURE_STORE_YAML).is_file():
        raise FileNotFoundError(f"{repo_dir / FEATURE_STORE_YAML} not found: not a feature repo")
    return FeatureStore(repo_path=str(repo_dir))


def plan(repo_dir: Path) -> str:
    """What `apply` would change in the registry, as Feast prints it."""
    store = open_store(repo_dir)
    registry_diff, _, _ = store.plan(_contents(RepoSpec.load(repo_dir), Path(repo_dir)))
    return str(registry_diff.to_string())


def _contents(spec: RepoSpec, repo_dir: Path) -> Any:
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

    objects = feast_objects(spec, repo_dir)
    return RepoContents(
        projects=[],
        data_sources=[o for o in objects if isinstance(o, DataSource)],
        feature_views=[o for o in objects if isinstance(o, FeatureView)],
        on_demand_feature_views=[],
        stream_feature_views=[],
        entities=[o for o in objects if isinstance(o, Entity)],
        feature_services=[o for o in objects if isinstance(o, FeatureService)],
        permissions=[],
    )


def apply(repo_dir: Path) -> FeatureStore:
    """Register the repository's objects (idempotent) and return the store."""
    repo_dir = Path(repo_dir).resolve()
    store = open_store(repo_dir)
    store.apply(feast_objects(RepoSpec.load(repo_dir), repo_dir))
    return store


def source_window(repo_dir: Path) -> tuple[datetime, datetime]:
    """First and last timestamp of the source data."""
    spec = RepoSpec.load(repo_dir)
    ts = pd.read_parquet(
        spec.path(repo_dir, spec.source), columns=[spec.data_schema.timestamp]
    ).iloc[:, 0]
    return ts.min().to_pydatetime(), ts.max().to_pydatetime()


def materialize(
    repo_dir: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    store: FeatureStore | None = None,
) -> FeatureStore:
    """Load the newest value per entity in [start, end] into the online store (default: all)."""
    repo_dir = Path(repo_dir).resolve()
    store = store or open_store(repo_dir)
    if start is None or end is None:
        first, last = source_window(repo_dir)
        start = start or first
        end = end or last + timedelta(seconds=1)
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints progress to stdout
        store.materialize(start_date=start, end_date=end)
    from loopline.data import online

    online.refresh(store)  # this process's next online read of the same entities is a hit
    log.info("materialized %s from %s to %s", repo_dir, start, end)
    return store


def _utc_timestamp(value: datetime) -> pd.Timestamp:
    """A window bound as a UTC timestamp; a naive one is taken as UTC (like the data)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def training_spine(
    repo_dir: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    entities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Entity, timestamp and label columns of the source rows in [start, end) for `entities`."""
    spec = RepoSpec.load(repo_dir)
    schema = spec.data_schema
    cols = [schema.entity, schema.timestamp, *schema.label_names]
    filters: list[tuple[str, str, Any]] = []
    if start is not None:
        filters.append((schema.timestamp, ">=", _utc_timestamp(start)))
    if end is not None:
        filters.append((schema.timestamp, "<", _utc_timestamp(end)))
    if entities is not None:
        filters.append((schema.entity, "in", list(entities)))
    spine = pd.read_parquet(spec.path(repo_dir, spec.source), columns=cols, filters=filters or None)
    return spine.reset_index(drop=True)


def get_training_frame(
    repo_dir: Path,
    service: str = ALL_SENSORS_SERVICE,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    entities: Sequence[str] | None = None,
    entity_df: pd.DataFrame | None = None,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time-correct features of `service` for each (entity, timestamp) row.

    Without `entity_df`, the rows are the source's own readings in [start, end) (with their
    labels); with it, its rows (plus any extra columns, e.g. labels) are used as they are.
    Result: entity, timestamp, the service's features in declared order, then other columns;
    sorted by timestamp then entity.
    """
    repo_dir = Path(repo_dir).resolve()
    spec = RepoSpec.load(repo_dir)
    schema = spec.data_schema
    if service not in spec.services:
        raise ValueError(f"feature service {service!r} not in this repository: {spec.services}")
    store = store or open_store(repo_dir)
    if entity_df is None:
        entity_df = training_spine(repo_dir, start, end, entities)
    else:
        missing = [c for c in (schema.entity, schema.timestamp) if c not in entity_df.columns]
        if missing:
            raise SchemaError(f"entity_df: missing column(s) {missing}")
        entity_df = normalise_timestamps(entity_df, schema.timestamp)
    fs = store.get_feature_service(service)
    feature_names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    if entity_df.empty:
        return pd.DataFrame(columns=[schema.entity, schema.timestamp, *feature_names])
    result = store.get_historical_features(entity_df=entity_df, features=fs).to_df()
    extra = [c for c in entity_df.columns if c not in (schema.entity, schema.timestamp)]
    result = result.sort_values([schema.timestamp, schema.entity], kind="stable")
    result = result.reset_index(drop=True)
    result[schema.timestamp] = pd.to_datetime(result[schema.timestamp], utc=True)
    return result[[schema.entity, schema.timestamp, *feature_names, *extra]]


def get_online_features(
    store: FeatureStore, entity_ids: Sequence[str], service: str = ALL_SENSORS_SERVICE
) -> pd.DataFrame:
    """The newest materialized features of `service` for each entity, one row per id.

    Columns: the join key, then the service's features in order; None where an entity has no
    row. Served from the store's in-process cache (`loopline.data.online`), which returns what
    Feast's own online read of the same store returns at that moment.
    """
    from loopline.data.online import reader_for

    return reader_for(store).read(entity_ids, service)
