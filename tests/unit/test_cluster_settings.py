"""Where the cluster lives by default, and the env prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.cluster.layout import Layout
from loopline.cluster.settings import ClusterSettings


def test_state_and_cache_follow_the_core_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LOOPLINE_CACHE_DIR", str(tmp_path / "cache"))
    settings = ClusterSettings()
    assert settings.resolved_state_dir() == tmp_path / "state" / "cluster"
    assert settings.resolved_cache_dir() == tmp_path / "cache"


def test_cluster_variables_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_CLUSTER_STATE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("LOOPLINE_CLUSTER_APISERVER_PORT", "6443")
    monkeypatch.setenv("LOOPLINE_CLUSTER_APISERVER_EXTRA_ARGS", '["--v=4"]')
    settings = ClusterSettings()
    assert settings.resolved_state_dir() == tmp_path / "mine"
    assert settings.apiserver_port == 6443
    assert settings.apiserver_extra_args == ["--v=4"]


def test_lock_file_lives_beside_the_state_dir_that_down_deletes(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cluster")
    assert layout.lock_file.parent == tmp_path
    assert not layout.lock_file.is_relative_to(layout.root)
