"""Online features from an in-process cache of the newest row per entity, exact against Feast.

Feast's `FeatureStore.get_online_features` spends about 1 ms (one entity) to 2 ms (ten) before
and around a 40 µs SQLite query: every call rebuilds the feature service's views from the
registry protobuf (`FeatureView.from_proto`, each `Field` type-checked by typeguard), re-derives
the join keys, then builds a response protobuf to be converted back to Python values
(docs/profiles/online-features.md). None of that changes between two reads unless the registry
or the online store does, so `OnlineFeatures` keeps

- the read plan of each feature service (views, their SQLite tables, join key, feature names),
  valid while the registry protobuf Feast itself would use is the same one (same object, same
  `version_id`; the file registry gives every commit a new one), refreshed on Feast's own
  registry cache ttl, so it serves what `FeatureStore.get_online_features` would;
- the decoded feature values of each entity it has been asked for (a miss, unknown entities
  included, is read from Feast's SQLite table with Feast's own key encoding and value
  decoding), valid while SQLite's `PRAGMA data_version` on its own connection is unchanged and
  the database file is the same file (same device and inode).

`PRAGMA data_version` changes whenever another connection commits to the database, in this
process (Feast's own connection, which materialisation writes through) or any other (a
`loopline data materialize` run elsewhere). The version is read before any value it labels,
so a cached value is never older than the version it is kept under: a read after a
materialisation commits never returns a value from before it, and Feast stays the source of
truth. `refresh()` re-reads the entities already cached (`features.materialize` calls it), so
a serving process's next read after its own materialisation is a hit.

Only Feast's file registry with the SQLite online store (the local repository) is served from
the cache; another online store (Redis on a cluster) or a service this reader cannot plan
(on-demand views, aliased projections, composite keys) falls back to Feast's own read.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

__all__ = ["OnlineFeatures", "reader_for", "refresh"]

# Entities per SQL query on a miss (SQLite's default limit of host parameters is 32766).
_CHUNK = 500
# Entities kept per view; past it the view's cache starts again (ids come from callers, and
# unknown ones are cached as "no row" too).
MAX_ENTITIES = 100_000


@dataclass(frozen=True)
class _ViewRead:
    """One feature view of a service: where its rows are and which features are asked for."""

    view: str
    table: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class _Plan:
    """How to answer a service: its join key (and Feast value type) and its views in order."""

    join_key: str
    key_type: Any  # feast.value_type.ValueType of the join key
    views: tuple[_ViewRead, ...]


class _Unplannable(Exception):
    """The service needs something only Feast's own read does (served by it instead)."""


class OnlineFeatures:
    """Reads online features of one `FeatureStore`, from a cache kept exact against its store.

    Thread-safe: one lock around each read (a hit is a few dictionary lookups under it).
    Holds the store weakly (`reader_for` keys readers by their store).
    """

    def __init__(self, store: FeatureStore) -> None:
        self._store_ref = weakref.ref(store)
        self._project = store.project
        self._lock = threading.Lock()
        self._plans: dict[str, _Plan | None] = {}  # None: served by Feast's own read
        self._registry_key: tuple[int, str] | None = None
        self._db_path = _sqlite_path(store)
        self._conn: sqlite3.Connection | None = None
        self._held: list[sqlite3.Connection | None] = [None]  # closed with this reader
        self._pid = os.getpid()
        self._file: tuple[int, int] | None = None
        self._version: int | None = None
        # view -> entity id -> {feature name: Python value}; {} for an entity with no row.
        self._rows: dict[str, dict[str, dict[str, Any]]] = {}
        weakref.finalize(self, _close, self._held)

    @property
    def _store(self) -> FeatureStore:
        store = self._store_ref()
        if store is None:
            raise ReferenceError("the FeatureStore of this reader is gone")
        return store

    @property
    def cached(self) -> bool:
        """Whether reads are served from the cache (False: Feast's own read, every time)."""
        return self._db_path is not None and hasattr(self._store.registry, "_get_registry_proto")

    def read(self, entity_ids: Sequence[str], service: str) -> pd.DataFrame:
        """The newest materialized features of `service` per id: join key, then its features."""
        ids = [str(e) for e in entity_ids]
        with self._lock:
            plan = self._plan(service) if self.cached else None
            if plan is not None:
                self._check_store()
                columns: dict[str, list[Any]] = {plan.join_key: ids}
                for view in plan.views:
                    rows = self._rows_of(plan, view, ids)
                    for name in view.features:
                        columns[name] = [r.get(name) for r in rows]
        if plan is None:
            return _feast_read(self._store, ids, service)
        return pd.DataFrame(columns)

    def refresh(self) -> None:
        """Re-read every cached entity now (after a materialisation), not at its next read.

        Materialisation also commits to the registry (the materialised intervals), which
        drops the plans and values; the services and entities known before are planned and
        read again here.
        """
        if not self.cached:
            return
        with self._lock:
            if not self._rows:
                return  # nothing read yet (a materialising CLI): no connection to open
            known = {view: list(entities) for view, entities in self._rows.items()}
            services = [s for s, p in self._plans.items() if p is not None]
            self._check_store()
            for service in services:
                plan = self._plan(service)
                if plan is None:
                    continue
                for view in plan.views:
                    if known.get(view.view):
                        self._rows_of(plan, view, known[view.view])

    def close(self) -> None:
        """Close the SQLite connection (a later read opens it again)."""
        with self._lock:
            self._disconnect()

    def _disconnect(self) -> None:
        _close(self._held)
        self._conn = None
        self._rows.clear()
        self._file = None
        self._version = None

    # -- validity -------------------------------------------------------------------------

    def _current_registry_key(self) -> tuple[int, str]:
        """The registry protobuf Feast's own read would use now (refreshed on its cache ttl)."""
        registry: Any = self._store.registry
        proto = registry._get_registry_proto(project=self._project, allow_cache=True)
        return id(proto), proto.version_id

    def _plan(self, service: str) -> _Plan | None:
        key = self._current_registry_key()
        if key != self._registry_key:
            self._plans.clear()
            self._rows.clear()  # views may have changed shape; values are re-read lazily
            self._registry_key = key
        if service not in self._plans:
            try:
                self._plans[service] = _make_plan(self._store, service)
            except _Unplannable as exc:
                log.info("online features of %s: Feast's own read (%s)", service, exc)
                self._plans[service] = None
        return self._plans[service]

    def _check_store(self) -> None:
        """Drop every cached value if the online store changed since it was read."""
        assert self._db_path is not None
        if self._pid != os.getpid():  # forked: the parent's connection is not this process's
            self._held[0] = self._conn = None
            self._pid = os.getpid()
        try:
            st = os.stat(self._db_path)
            file = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            file = None
        if file is None or file != self._file or self._conn is None:
            self._disconnect()
            if file is None:
                return  # nothing materialized yet: every read is a miss (and no row)
            self._conn = self._held[0] = _connect(self._db_path)
            self._file = file
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._rows.clear()
            self._version = version

    # -- values ---------------------------------------------------------------------------

    def _rows_of(self, plan: _Plan, view: _ViewRead, ids: list[str]) -> list[dict[str, Any]]:
        cache = self._rows.setdefault(view.view, {})
        missing = [e for e in dict.fromkeys(ids) if e not in cache]
        if missing:
            if len(cache) + len(missing) > MAX_ENTITIES:
                cache.clear()
                missing = list(dict.fromkeys(ids))
            cache.update(self._load(plan, view, missing))
        return [cache[e] for e in ids]

    def _load(self, plan: _Plan, view: _ViewRead, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Rows of `ids` from Feast's table, decoded as Feast's own read decodes them."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        out: dict[str, dict[str, Any]] = {e: {} for e in ids}
        if self._conn is None:
            return out
        version = self._store.config.entity_key_serialization_version
        values = python_values_to_proto_values(ids, plan.key_type)
        by_key = {
            serialize_entity_key(
                EntityKey(join_keys=[plan.join_key], entity_values=[v]),
                entity_key_serialization_version=version,
            ): e
            for e, v in zip(ids, values, strict=True)
        }
        keys = list(by_key)
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            try:
                cur = self._conn.execute(
                    f"SELECT entity_key, feature_name, value FROM {view.table} "
                    f"WHERE entity_key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # applied, never materialized
                    continue
                raise
            for key, feature, blob in cur.fetchall():
                value = Value()
                value.ParseFromString(blob)
                out[by_key[key]][feature] = feast_value_type_to_python_type(value)
        return out


def _connect(path: str) -> sqlite3.Connection:
    """A read-only connection (it must never commit: its data_version counts others' commits)."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _close(held: list[sqlite3.Connection | None]) -> None:
    conn, held[0] = held[0], None
    if conn is not None:
        conn.close()


def _sqlite_path(store: FeatureStore) -> str | None:
    """The SQLite file of a store's online store; None for any other online store."""
    config = store.config
    online = config.online_store
    kind = getattr(online, "type", "")
    if not (kind == "sqlite" or str(kind).endswith("SqliteOnlineStore")):
        return None
    if getattr(online, "vector_enabled", False):
        return None
    path = str(online.path)
    if config.repo_path and not os.path.isabs(path):
        path = str(config.repo_path / path)
    return path


def _make_plan(store: FeatureStore, service: str) -> _Plan:
    from feast.errors import FeatureViewNotFoundException

    fs = store.get_feature_service(service, allow_cache=True)
    views: list[_ViewRead] = []
    join_keys: set[tuple[str, Any]] = set()
    for proj in fs.feature_view_projections:
        if proj.name_alias or proj.join_key_map:
            raise _Unplannable(f"projection {proj.name} is aliased or maps join keys")
        try:
            view = store.get_feature_view(proj.name, allow_registry_cache=True)
        except FeatureViewNotFoundException as exc:
            raise _Unplannable(f"{proj.name} is not a plain feature view") from exc
        if len(view.entity_columns) != 1:
            raise _Unplannable(f"{view.name} has {len(view.entity_columns)} join keys")
        column = view.entity_columns[0]
        join_keys.add((column.name, column.dtype.to_value_type()))
        views.append(
            _ViewRead(
                view=view.name,
                table=f"{store.config.project}_{view.name}",
                features=tuple(f.name for f in proj.features),
            )
        )
    names = [n for v in views for n in v.features]
    if len(join_keys) != 1 or len(set(names)) != len(names):
        raise _Unplannable("views with different join keys or repeated feature names")
    ((join_key, key_type),) = join_keys
    return _Plan(join_key=join_key, key_type=key_type, views=tuple(views))


def _feast_read(store: FeatureStore, ids: list[str], service: str) -> pd.DataFrame:
    """Feast's own online read of `service` (the path the cache is checked against)."""
    fs = store.get_feature_service(service, allow_cache=True)
    join_key = _join_key(store, fs)
    response = store.get_online_features(features=fs, entity_rows=[{join_key: e} for e in ids])
    names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    return pd.DataFrame(response.to_dict())[[join_key, *names]]


def _join_key(store: FeatureStore, fs: Any) -> str:
    view = store.get_feature_view(fs.feature_view_projections[0].name, allow_registry_cache=True)
    return str(view.entity_columns[0].name)


_READERS: weakref.WeakKeyDictionary[FeatureStore, OnlineFeatures] = weakref.WeakKeyDictionary()
_READERS_LOCK = threading.Lock()


def reader_for(store: FeatureStore) -> OnlineFeatures:
    """The one `OnlineFeatures` of `store` (created at its first read, gone with the store)."""
    with _READERS_LOCK:
        reader = _READERS.get(store)
        if reader is None:
            reader = _READERS[store] = OnlineFeatures(store)
        return reader


def refresh(store: FeatureStore) -> None:
    """After `store` materialized: re-read what its reader has cached (if it has one)."""
    with _READERS_LOCK:
        reader = _READERS.get(store)
    if reader is not None:
        reader.refresh()
