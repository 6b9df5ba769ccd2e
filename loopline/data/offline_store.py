"""Feast's file offline store with a point-in-time join that scales: an as-of merge.

Feast's own file store (dask) joins the entity rows with *every* feature row of the same
entity and then filters by time, so its cost is rows x rows-per-entity: a month of one-minute
readings of 24 machines (1M rows) asks for a 300 GiB intermediate. Factory data is exactly
that shape (few entities, many timestamps), so Loopline's repositories use this subclass: the
same parquet sources, registry, materialization and online path, and a historical retrieval
done with `pandas.merge_asof` per feature view, which is O(n log n). Its semantics are Feast's:
for each entity row, the newest feature row of the same key with
`entity_ts - ttl <= feature_ts <= entity_ts` (a tie on the timestamp takes the newest
created-timestamp); tests check it against the stock store and a hand-built case.

Selected in feature_store.yaml with
`offline_store: {type: loopline.data.offline_store.AsofFileOfflineStore}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dask.dataframe as dd
import pandas as pd
from feast.feature_view import FeatureView
from feast.infra.offline_stores.dask import (
    DaskOfflineStore,
    DaskOfflineStoreConfig,
    DaskRetrievalJob,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from feast.utils import _get_requested_feature_views_to_features_dict

from loopline.data.features import OFFLINE_STORE_TYPE

STORE_TYPE = OFFLINE_STORE_TYPE
_ROW = "__loopline_row"


class AsofFileOfflineStoreConfig(DaskOfflineStoreConfig):
    """Config of the as-of file store; a DaskOfflineStoreConfig so the inherited paths accept it."""

    type: Literal["loopline.data.offline_store.AsofFileOfflineStore"] = STORE_TYPE  # type: ignore[assignment]


class _AsofRetrievalJob(DaskRetrievalJob):
    """A retrieval whose result is computed by pandas (dask only wraps it for `persist`)."""

    def __init__(self, compute: Any, **kwargs: Any) -> None:
        self._compute = compute
        super().__init__(
            evaluation_function=lambda: dd.from_pandas(compute(), npartitions=1), **kwargs
        )

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._compute().reset_index(drop=True)

    def _to_arrow_internal(self, timeout: int | None = None) -> Any:
        import pyarrow

        return pyarrow.Table.from_pandas(self._compute(), preserve_index=False)


def _timestamp_column(entity_df: pd.DataFrame) -> str:
    if DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL in entity_df.columns:
        return DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
    candidates = list(entity_df.select_dtypes(include=["datetime", "datetimetz"]).columns)
    if len(candidates) == 1:
        return str(candidates[0])
    raise ValueError(
        f"entity_df needs a column named {DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL!r} or exactly one "
        f"datetime column; it has {list(entity_df.columns)}"
    )


def _utc_ns(values: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True)
    return parsed.astype("datetime64[ns, UTC]")


def _read_source(source: FileSource, repo_path: Path | None, columns: list[str]) -> pd.DataFrame:
    path = Path(source.path)
    if not path.is_absolute() and repo_path is not None:
        path = Path(repo_path) / path
    mapping = source.field_mapping or {}
    inverse = {v: k for k, v in mapping.items()}
    frame = pd.read_parquet(path, columns=[inverse.get(c, c) for c in columns])
    return frame.rename(columns=mapping) if mapping else frame


def asof_join(
    entity_df: pd.DataFrame,
    timestamp_col: str,
    views: list[tuple[FeatureView, list[str]]],
    repo_path: Path | None,
    full_feature_names: bool = False,
) -> pd.DataFrame:
    """Entity rows (in their order) with each view's features as of their timestamp."""
    left = entity_df.copy()
    left[_ROW] = range(len(left))
    left[timestamp_col] = _utc_ns(left[timestamp_col])
    left = left.sort_values(timestamp_col, kind="stable")
    for view, features in views:
        source = view.batch_source
        if not isinstance(source, FileSource):
            raise TypeError(f"feature view {view.name}: only file sources are supported")
        join_keys = [
            view.projection.join_key_map.get(col.name, col.name) for col in view.entity_columns
        ]
        src_keys = [col.name for col in view.entity_columns]
        ts_field = source.timestamp_field
        created = source.created_timestamp_column
        cols = [*src_keys, ts_field, *([created] if created else []), *features]
        right = _read_source(source, repo_path, list(dict.fromkeys(cols)))
        right = right.rename(columns=dict(zip(src_keys, join_keys, strict=True)))
        right_ts = f"__{view.name}_ts"
        right = right.rename(columns={ts_field: right_ts})
        right[right_ts] = _utc_ns(right[right_ts])
        order = [right_ts, created] if created else [right_ts]
        right = right.sort_values(order, kind="stable")
        if created:
            right = right.drop(columns=[created])
        out_names = {
            f: (f"{view.projection.name_to_use()}__{f}" if full_feature_names else f)
            for f in features
        }
        right = right.rename(columns=out_names)
        for key in join_keys:
            if key in left.columns and left[key].dtype != right[key].dtype:
                right[key] = right[key].astype(left[key].dtype)
        tolerance = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
        left = pd.merge_asof(
            left,
            right,
            left_on=timestamp_col,
            right_on=right_ts,
            by=join_keys or None,
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(tolerance) if tolerance is not None else None,
        ).drop(columns=[right_ts])
    return left.sort_values(_ROW).drop(columns=[_ROW]).reset_index(drop=True)


class AsofFileOfflineStore(DaskOfflineStore):
    """The file offline store with an as-of point-in-time join (see the module docstring)."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            raise ValueError(
                f"entity_df must be a pandas DataFrame for the file store, not {type(entity_df)}"
            )
        ts_col = _timestamp_column(entity_df)
        by_view, _ = _get_requested_feature_views_to_features_dict(
            feature_refs, feature_views, registry.list_on_demand_feature_views(config.project)
        )
        views = list(by_view.items())
        stamps = _utc_ns(entity_df[ts_col])
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity_df.columns if c != ts_col],
            min_event_timestamp=stamps.min().to_pydatetime() if len(stamps) else None,
            max_event_timestamp=stamps.max().to_pydatetime() if len(stamps) else None,
        )
        cache: dict[str, pd.DataFrame] = {}

        def compute() -> pd.DataFrame:
            if "result" not in cache:
                cache["result"] = asof_join(
                    entity_df, ts_col, views, config.repo_path, full_feature_names
                )
            return cache["result"]

        from feast.on_demand_feature_view import OnDemandFeatureView

        return _AsofRetrievalJob(
            compute,
            full_feature_names=full_feature_names,
            repo_path=str(config.repo_path),
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(
                feature_refs, project, registry
            ),
            metadata=metadata,
        )
