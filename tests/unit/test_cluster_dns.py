"""CoreDNS's Corefile and the objects that publish it as kube-dns (pure builders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.cluster import dns, registry


def _config(**changes: object) -> dns.DnsConfig:
    base: dict[str, object] = {
        "listen_address": "192.0.2.10",
        "port": 5353,
        "health_port": 8081,
        "ready_port": 8182,
        "kubeconfig": Path("/state/coredns/kubeconfig"),
        "upstreams": ("192.0.2.53", "198.51.100.53"),
    }
    return dns.DnsConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_upstreams_come_from_resolv_conf_in_order() -> None:
    text = """\
# generated
nameserver 192.0.2.53
search example.test
nameserver fe80::1%eth0 ; link-local with a zone
nameserver not-an-address
nameserver 198.51.100.53  # trailing comment
"""
    assert dns.upstream_servers(text) == ("192.0.2.53", "fe80::1", "198.51.100.53")


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.1.1", "::1", "224.0.0.1", "nope"])
def test_listen_address_must_be_reachable_by_pods(address: str) -> None:
    with pytest.raises(ValueError, match=r"listen_address"):
        dns.validate_listen_address(address)


def test_corefile_serves_the_cluster_zone_and_forwards_the_rest() -> None:
    text = dns.corefile(_config())
    assert text.startswith(".:5353 {")
    assert "bind 127.0.0.1 192.0.2.10" in text
    assert "health 127.0.0.1:8081" in text
    assert "ready 127.0.0.1:8182" in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in text
    assert "kubeconfig /state/coredns/kubeconfig loopline" in text
    assert "forward . 192.0.2.53 198.51.100.53" in text
    assert "loop" in text.split()


def test_corefile_without_upstreams_is_refused() -> None:
    with pytest.raises(ValueError, match="no upstream DNS servers"):
        dns.corefile(_config(upstreams=()))


def test_service_is_kube_dns_at_the_tenth_service_address_without_selector() -> None:
    service = dns.service()
    assert service["metadata"]["name"] == "kube-dns"  # type: ignore[index]
    assert service["metadata"]["namespace"] == "kube-system"  # type: ignore[index]
    spec = service["spec"]
    assert spec["clusterIP"] == "10.0.0.10"  # type: ignore[index]
    assert "selector" not in spec  # type: ignore[operator]
    assert {(p["name"], p["protocol"]) for p in spec["ports"]} == {  # type: ignore[index]
        ("dns", "UDP"),
        ("dns-tcp", "TCP"),
    }
    with pytest.raises(ValueError, match="outside the service range"):
        dns.service("10.96.0.10")


def test_endpoint_slice_pairs_port_names_with_the_service_and_is_not_the_controllers() -> None:
    slice_ = dns.endpoint_slice("192.0.2.10", 5353)
    labels = slice_["metadata"]["labels"]  # type: ignore[index]
    assert labels["kubernetes.io/service-name"] == "kube-dns"
    assert labels["endpointslice.kubernetes.io/managed-by"] == dns.MANAGED_BY
    assert slice_["endpoints"] == [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}]
    assert {p["name"]: p["port"] for p in slice_["ports"]} == {"dns": 5353, "dns-tcp": 5353}  # type: ignore[attr-defined]


def test_rbac_grants_list_and_watch_only_and_comes_first() -> None:
    items = dns.objects("192.0.2.10", 5353)
    assert [i["kind"] for i in items] == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "EndpointSlice",
    ]
    verbs = {v for rule in items[0]["rules"] for v in rule["verbs"]}  # type: ignore[attr-defined]
    assert verbs == {"list", "watch"}
    assert items[1]["subjects"][0]["name"] == dns.USER  # type: ignore[index]


def test_registry_hosts_toml_and_image_names() -> None:
    toml = registry.containerd_hosts_toml("127.0.0.1:5000")
    assert 'server = "http://127.0.0.1:5000"' in toml
    assert registry.image("127.0.0.1:5000", "loopline/runtime", "v1") == (
        "127.0.0.1:5000/loopline/runtime:v1"
    )
    assert registry.command(Path("/usr/bin/docker-registry"), Path("/c.yml")) == [
        "/usr/bin/docker-registry",
        "serve",
        "/c.yml",
    ]
