"""The pins file, and the committed go.mod files that must agree with it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from loopline.cluster.versions import PLATFORM_DIR, load_pins, parse_versions_env, pins_from_text


def test_parse_versions_env_skips_comments_and_strips_quotes() -> None:
    text = '# comment\n\nKUBERNETES_VERSION=v1.2.3\nETCD_VERSION="v3.6.0"\n'
    assert parse_versions_env(text) == {"KUBERNETES_VERSION": "v1.2.3", "ETCD_VERSION": "v3.6.0"}


def test_parse_versions_env_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="KEY=value"):
        parse_versions_env("not a pin\n")


def test_missing_pin_is_named() -> None:
    with pytest.raises(ValueError, match="HELM_VERSION"):
        pins_from_text("KUBERNETES_VERSION=v1\nETCD_VERSION=v3\nKWOK_VERSION=v0\n")


def test_bin_dir_is_keyed_by_kubernetes_version() -> None:
    pins = load_pins()
    assert pins.bin_subdir == f"k8s-{pins.kubernetes}"
    assert re.fullmatch(r"v1\.\d+\.\d+", pins.kubernetes)


def _gomod(name: str) -> str:
    return (PLATFORM_DIR / name / "go.mod").read_text()


@pytest.mark.parametrize("module", ["controlplane", "node"])
def test_kubernetes_gomods_require_the_pinned_kubernetes(module: str) -> None:
    pins = load_pins()
    assert re.search(rf"^\s*k8s\.io/kubernetes {re.escape(pins.kubernetes)}$", _gomod(module), re.M)


@pytest.mark.parametrize("module", ["controlplane", "node"])
def test_every_staging_module_is_replaced_with_the_matching_version(module: str) -> None:
    """Each k8s.io module resolved at v0.0.0 (a staging module) must be replaced by the
    v0.X.Y of the pinned v1.X.Y, or the build would fail or mix versions."""
    pins = load_pins()
    staging_version = "v0." + pins.kubernetes.removeprefix("v1.")
    gomod = _gomod(module)
    at_zero = set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+) v0\.0\.0(?: // indirect)?$", gomod, re.M))
    replaced = dict(re.findall(r"^\s*(k8s\.io/[\w.\-/]+) => \S+ (v\S+)$", gomod, re.M))
    assert at_zero, "expected upstream's staging modules in the require list"
    assert at_zero <= set(replaced)
    assert set(replaced.values()) == {staging_version}


def test_etcd_gomod_requires_the_pinned_etcd() -> None:
    pins = load_pins()
    assert re.search(
        rf"^require go\.etcd\.io/etcd/server/v3 {re.escape(pins.etcd)}$", _gomod("etcd"), re.M
    )
    major, minor = (int(x) for x in pins.etcd.removeprefix("v").split(".")[:2])
    assert (major, minor) >= (3, 5), "Kubernetes 1.31+ needs etcd >= 3.5.11"


def test_coredns_gomod_pins_the_release_the_corefile_is_written_for() -> None:
    assert re.search(r"^require github\.com/coredns/coredns v1\.15\.0$", _gomod("coredns"), re.M)


def test_node_build_scripts_are_where_python_runs_them_and_share_the_bin_dir(
    tmp_path: Path,
) -> None:
    """`up --runtime containerd` runs these scripts by path; build-node.sh writes to the bin
    dir the control plane's binaries are looked up in."""
    from loopline.cluster import dns
    from loopline.cluster.node import runner

    assert runner.BUILD_NODE_SCRIPT.is_file()
    assert dns.BUILD_SCRIPT.is_file()
    env = {**os.environ, "LOOPLINE_CACHE_DIR": str(tmp_path)}
    printed = subprocess.run(
        ["bash", str(runner.BUILD_NODE_SCRIPT), "--print-bin-dir"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == str(tmp_path / load_pins().bin_subdir / "bin")
