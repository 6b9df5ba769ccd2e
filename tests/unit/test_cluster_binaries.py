"""Finding and building the binaries: the error paths a fresh machine hits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from loopline.cluster import binaries
from loopline.cluster.errors import GoNotFoundError, MissingBinariesError
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.versions import BUILD_SCRIPT, load_pins


def test_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build.sh itself detects the missing toolchain (exit 3) before touching the cache."""
    monkeypatch.setenv("GO", str(tmp_path / "no-such-go"))
    settings = ClusterSettings(cache_dir=tmp_path / "cache")
    with pytest.raises(GoNotFoundError, match=r"needs Go >= 1\.26"):
        binaries.build(settings, quiet=True)
    assert not (tmp_path / "cache").exists()


def test_build_script_prints_the_directory_python_expects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setenv("LOOPLINE_CACHE_DIR", str(tmp_path))
    printed = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    settings = ClusterSettings(cache_dir=tmp_path)
    assert Path(printed) == binaries.cache_bin_dir(settings, load_pins())


def _fake_bin_dir(path: Path, names: tuple[str, ...]) -> Path:
    path.mkdir()
    for name in names:
        target = path / name
        target.write_text("#!/bin/sh\n")
        target.chmod(target.stat().st_mode | stat.S_IXUSR)
    return path


def test_configured_bin_dir_must_hold_every_binary(tmp_path: Path) -> None:
    partial = _fake_bin_dir(tmp_path / "bin", ("etcd", "kube-apiserver"))
    with pytest.raises(MissingBinariesError, match="kubectl"):
        binaries.ensure(ClusterSettings(bin_dir=partial))


def test_configured_bin_dir_is_used_without_building(tmp_path: Path) -> None:
    complete = _fake_bin_dir(tmp_path / "bin", binaries.BINARIES)
    found = binaries.ensure(ClusterSettings(bin_dir=complete))
    assert found.kubectl == complete / "kubectl"
    assert found.missing() == []
    assert os.access(found["kube-apiserver"], os.X_OK)
    with pytest.raises(KeyError):
        found["docker"]
