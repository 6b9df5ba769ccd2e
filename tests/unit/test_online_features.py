"""Which online stores the cache serves, and its read-only connection (no Feast repository)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from feast.repo_config import RepoConfig

from loopline.data.online import _close, _connect, _sqlite_path


def _store(online_store: dict[str, Any], repo_path: Path | None) -> Any:
    config = RepoConfig(
        project="p",
        provider="local",
        registry="data/registry.db",
        online_store=online_store,
        repo_path=repo_path,
        entity_key_serialization_version=3,
    )
    return SimpleNamespace(config=config)


def test_sqlite_path_is_under_the_repository(tmp_path: Path) -> None:
    store = _store({"type": "sqlite", "path": "data/online.db"}, tmp_path)
    assert _sqlite_path(store) == str(tmp_path / "data" / "online.db")
    absolute = tmp_path / "elsewhere.db"
    assert _sqlite_path(_store({"type": "sqlite", "path": str(absolute)}, tmp_path)) == str(
        absolute
    )


def test_other_online_stores_are_not_cached(tmp_path: Path) -> None:
    assert _sqlite_path(_store({"type": "redis", "connection_string": "h:1"}, tmp_path)) is None
    vectors = {"type": "sqlite", "path": "data/online.db", "vector_enabled": True}
    assert _sqlite_path(_store(vectors, tmp_path)) is None


def test_the_connection_is_read_only_and_sees_other_commits(tmp_path: Path) -> None:
    path = tmp_path / "a b#c.db"  # URI-special characters in the path
    writer = sqlite3.connect(path)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.commit()
    held: list[sqlite3.Connection | None] = [_connect(str(path))]
    reader = held[0]
    assert reader is not None
    before = reader.execute("PRAGMA data_version").fetchone()[0]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("INSERT INTO t VALUES (1)")
    writer.execute("INSERT INTO t VALUES (2)")
    writer.commit()
    assert reader.execute("PRAGMA data_version").fetchone()[0] != before
    assert reader.execute("SELECT x FROM t").fetchall() == [(2,)]
    _close(held)
    assert held == [None]
    writer.close()
