"""The local cluster's default StorageClass and the volume directories `down` removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopline.cluster import commands, storage
from loopline.cluster.layout import Layout
from loopline.operators.builders.volumes import build_claim, permissions_init_container


def _pvs(*paths: str) -> str:
    return json.dumps({"items": [{"spec": {"hostPath": {"path": p}}} for p in paths]})


def test_the_storage_class_is_the_default_and_deletes_its_volumes() -> None:
    sc = storage.storage_class()
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert (sc["provisioner"], sc["reclaimPolicy"]) == ("kubernetes.io/host-path", "Delete")


def test_the_controller_manager_runs_the_hostpath_provisioner(tmp_path: Path) -> None:
    ports = commands.Ports(20001, 20002, 20003, 20004, 20005, 20006)
    argv = commands.controller_manager_command(
        tmp_path / "kube-controller-manager", Layout(tmp_path), ports
    )
    assert storage.CONTROLLER_MANAGER_FLAG in argv


def test_down_removes_only_the_provisioners_own_directories() -> None:
    found = storage.volume_dirs(
        _pvs(
            "/tmp/hostpath_pv/6b1f",
            "/srv/plant-data",  # a hand-made volume: someone's data
            "/tmp/hostpath_pv/../etc",
            "/tmp/hostpath_pv/a/b",
        )
    )
    assert found == [Path("/tmp/hostpath_pv/6b1f")]
    assert storage.volume_dirs(json.dumps({"items": []})) == []


def test_a_claim_and_its_permissions_init_container() -> None:
    claim = build_claim("ns", "m-monitor", "1Gi", labels={"loopline.dev/model": "m"})
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default
    assert build_claim("ns", "c", "500Mi", "fast")["spec"]["storageClassName"] == "fast"
    init = permissions_init_container("img", "state", "/var/lib/loopline")
    assert init["command"] == ["chown", "10001:10001", "/var/lib/loopline"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_a_bad_size_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match="1Gi"):
        build_claim("ns", "c", "lots")
