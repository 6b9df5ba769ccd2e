"""Where the cluster backends' objects live in the API (no discovery needed)."""

from __future__ import annotations

import pytest

from loopline.operators.backends.kube_objects import env_value, resource_path


def test_paths_of_core_and_group_kinds() -> None:
    assert resource_path("v1", "Service", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert resource_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (
        resource_path("networking.k8s.io/v1", "NetworkPolicy", "ns", "p")
        == "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/p"
    )
    with pytest.raises(ValueError, match="namespace"):
        resource_path("v1", "Service", "", "a")


def test_env_value_reads_a_plain_variable_not_a_secret_reference() -> None:
    spec = {
        "containers": [
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            {"env": [{"name": "A", "value": "x"}]},
        ]
    }
    assert env_value(spec, "A") == "x"
    assert env_value(spec, "B") is None
    assert env_value(None, "A") is None
