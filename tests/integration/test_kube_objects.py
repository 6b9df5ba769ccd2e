"""KubeObjects against the real API server: server-side apply is idempotent and removes
fields the builder stops setting, reads and lists by label, deletes, and creates a Model's
token Secret once without ever reading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from loopline.cluster.storage import HOSTPATH_ROOT
from loopline.operators.backends.kube_objects import KubeObjects
from loopline.operators.builders.auth import token_secret_name
from loopline.operators.builders.volumes import build_claim
from loopline.operators.errors import BackendUnavailable
from tests.fixtures.cluster import wait_for


def _service(namespace: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "t", **labels}},
        "spec": {"selector": {"app": "t"}, "ports": [{"name": "http", "port": 8080}]},
    }


def test_apply_is_idempotent_and_follows_the_desired_object(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    objects = KubeObjects(kube_api)
    first = objects.apply(_service(namespace, "svc", extra="yes"))
    again = objects.apply(_service(namespace, "svc", extra="yes"))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = objects.apply(_service(namespace, "svc"))  # the builder stopped setting `extra`
    assert "extra" not in changed["metadata"]["labels"]
    read = objects.get("v1", "Service", namespace, "svc")
    assert read is not None
    assert read["spec"]["ports"][0]["port"] == 8080
    assert [o["metadata"]["name"] for o in objects.list("v1", "Service", namespace, "app=t")] == [
        "svc"
    ]
    objects.delete("v1", "Service", namespace, "svc")
    objects.delete("v1", "Service", namespace, "svc")  # absent is fine
    assert objects.get("v1", "Service", namespace, "svc") is None


def test_apply_of_an_invalid_object_says_what_the_api_server_refused(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    bad = _service(namespace, "bad")
    bad["spec"]["ports"][0]["port"] = 70000
    with pytest.raises(BackendUnavailable, match=r"apply Service .*/bad: 422 .*port"):
        KubeObjects(kube_api).apply(bad)


def test_token_secret_is_created_once_and_never_overwritten(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    objects = KubeObjects(kube_api)
    digest = objects.ensure_token_secret(namespace, "drill")
    assert digest is not None
    assert len(digest) >= 16
    secret = k8s.CoreV1Api(kube_api).read_namespaced_secret(token_secret_name("drill"), namespace)
    before = secret.metadata.resource_version
    assert objects.ensure_token_secret(namespace, "drill") is None
    after = k8s.CoreV1Api(kube_api).read_namespaced_secret(token_secret_name("drill"), namespace)
    assert after.metadata.resource_version == before


def test_a_claim_binds_on_the_local_cluster_and_its_directory_goes_with_it(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    """The local cluster's default StorageClass (the controller-manager's hostPath
    provisioner) binds a claim to a directory under /tmp/hostpath_pv and removes it after."""
    objects = KubeObjects(kube_api)
    objects.apply(build_claim(namespace, "state", "64Mi"))

    def bound() -> dict[str, Any] | None:
        claim = objects.get("v1", "PersistentVolumeClaim", namespace, "state")
        return claim if claim and claim["status"].get("phase") == "Bound" else None

    claim = wait_for(bound, timeout=60, what="claim state Bound")
    pv = k8s.CoreV1Api(kube_api).read_persistent_volume(claim["spec"]["volumeName"])
    directory = Path(pv.spec.host_path.path)
    assert directory.parent == HOSTPATH_ROOT
    assert directory.is_dir()
    objects.delete("v1", "PersistentVolumeClaim", namespace, "state")
    wait_for(lambda: not directory.exists(), timeout=60, what=f"{directory} removed")
